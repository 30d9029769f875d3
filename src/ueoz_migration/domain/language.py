"""The languages of the pages and of the e-mail: Polish, and English for who chooses it."""

LANGUAGES = ("pl", "en")
DEFAULT_LANGUAGE = "pl"
