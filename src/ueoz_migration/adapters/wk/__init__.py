"""Login through Węzeł Krajowy (login.gov.pl): the service provider side."""

from .settings import WkConfigError, WkSettings
from .sp import (
    AuthnRequestForm,
    FailureReason,
    Identity,
    LoginFailed,
    MemoryReplayStore,
    ReplayStore,
    ServiceProvider,
)

__all__ = [
    "AuthnRequestForm",
    "FailureReason",
    "Identity",
    "LoginFailed",
    "MemoryReplayStore",
    "ReplayStore",
    "ServiceProvider",
    "WkConfigError",
    "WkSettings",
]
