"""The page language: Polish unless the person chose English with the EN PL switch."""

from __future__ import annotations

from flask import session

LANGUAGES = ("pl", "en")
DEFAULT_LANGUAGE = "pl"


def current_language() -> str:
    language = session.get("language")
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def safe_next(target: str | None, default: str = "/") -> str:
    """Return ``target`` if it is a path on this site, else ``default`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target
