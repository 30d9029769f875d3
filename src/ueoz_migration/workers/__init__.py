"""The background workers: each claims its work under a lease and does it outside a transaction.

``search.py`` looks each new attempt's person up in e-PLOZ; ``outbox.py`` delivers the
outbox's e-mail. docs/architecture.md, "Background work".
"""
