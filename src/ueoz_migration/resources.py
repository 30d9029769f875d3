"""Where the flow definitions and templates are, in a checkout and in an installed package.

The design keeps ``flows/`` and ``templates/`` at the top of the tree; setup.cfg maps them
into the package (``ueoz_migration/flows``, ``ueoz_migration/templates``) when it is built.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _top_level(name: str) -> Path:
    installed = _PACKAGE / name
    return installed if installed.is_dir() else _PACKAGE.parent.parent / name


def flows_dir() -> Path:
    return _top_level("flows")


def templates_dir() -> Path:
    return _top_level("templates")


def default_flow_path() -> Path:
    return flows_dir() / "migration.yaml"
