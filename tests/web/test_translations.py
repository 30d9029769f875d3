"""The English catalog covers every text of the pages, and the compiled .mo matches the .po."""

from __future__ import annotations

from pathlib import Path

from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "src/ueoz_migration/translations/en/LC_MESSAGES"
KEYWORDS = {"_": None, "gettext": None, "_l": None, "lazy_gettext": None}


def page_texts() -> set[str]:
    texts = set()
    for folder, method in (
        (ROOT / "templates", "jinja2"),
        (ROOT / "src/ueoz_migration/web", "python"),
    ):
        pattern = "**.html" if method == "jinja2" else "**.py"
        for _file, _line, message, _comments, _context in extract_from_dir(
            folder, method_map=[(pattern, method)], keywords=KEYWORDS
        ):
            texts.add(message if isinstance(message, str) else message[0])
    return texts


def test_every_text_of_the_pages_has_an_english_translation():
    with (CATALOG / "messages.po").open("rb") as handle:
        catalog = read_po(handle)
    translated = {message.id for message in catalog if message.id and message.string}

    missing = page_texts() - translated

    assert not missing, "run pybabel extract/update and translate: " + repr(sorted(missing))


def test_the_compiled_catalog_is_the_current_po():
    with (CATALOG / "messages.po").open("rb") as handle:
        source = {m.id: m.string for m in read_po(handle) if m.id}
    with (CATALOG / "messages.mo").open("rb") as handle:
        compiled = {m.id: m.string for m in read_mo(handle) if m.id}

    assert compiled == source, "run: pybabel compile -d src/ueoz_migration/translations"
