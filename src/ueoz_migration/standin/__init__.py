"""The stand-in national login node: development, tests and demos only."""

from .app import create_standin_app
from .identities import DEMO_IDENTITIES, DemoIdentity
from .settings import Failure, StandinRefused, StandinSettings

__all__ = [
    "DEMO_IDENTITIES",
    "DemoIdentity",
    "Failure",
    "StandinRefused",
    "StandinSettings",
    "create_standin_app",
]
