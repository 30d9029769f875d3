"""The page language: Polish unless the person chose English with the EN PL switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from babel.support import NullTranslations, Translations
from flask import Flask, session
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

from ..domain.language import DEFAULT_LANGUAGE, LANGUAGES

DOMAIN = "messages"


def current_language() -> str:
    language = session.get("language")
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def safe_next(target: str | None, default: str = "/") -> str:
    """Return ``target`` if it is a path on this site, else ``default`` (no open redirect).

    Control characters are refused outright: browsers drop tabs and newlines from a URL
    (``/\t/evil.example`` becomes ``//evil.example``, another site), and a newline in a
    ``Location`` header is refused by the server with an error.
    """
    if not target or any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return default
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


class PageCatalogs:
    """The compiled catalog of each page language, loaded once per process.

    flask-babel's ``gettext`` finds the request's locale and its catalog again on every
    call (a dozen attribute lookups through Flask's proxies and a locale rendered to text);
    a page's layout alone has about 25 texts, and that added up to over half of the time
    spent rendering a page. The catalogs are the same files flask-babel reads.
    """

    def __init__(self, directory: Path) -> None:
        self._catalogs: dict[str, NullTranslations] = {
            language: Translations.load(str(directory), [language], DOMAIN)
            for language in LANGUAGES
        }

    def for_language(self, language: str) -> NullTranslations:
        return self._catalogs.get(language) or self._catalogs[DEFAULT_LANGUAGE]

    def install(self, app: Flask) -> None:
        """Let the templates' ``_()`` and ``gettext()`` translate through these catalogs.

        Same behaviour as Jinja's new-style gettext (the text is always a format string,
        autoescaped values are Markup), without its two extra calls per text.
        """

        @pass_context
        def gettext(context: Context, text: str, **variables: Any) -> str:
            # The layout's context carries the language; macros imported without the
            # context ask the session.
            language = context.get("current_language") or current_language()
            translated = self.for_language(language).ugettext(text)
            if context.eval_ctx.autoescape:
                translated = Markup(translated)  # noqa: S704 - our own catalog, as Jinja does
            return translated % variables

        app.jinja_env.globals.update(_=gettext, gettext=gettext)
