"""Anchors: signed heads of the whole transition log, kept outside the database.

``audit anchor`` (take.py) signs the root of a Merkle tree over every log row (RFC 9162,
merkle.py; the rows and their order, leaves.py) and writes it into a file (document.py) with
a key the database never sees (keys.py); ``audit verify --anchors`` (check.py) proves that
today's log still extends each one. docs/audit.md, "Anchors", says how they are used.
"""
