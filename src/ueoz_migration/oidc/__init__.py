"""UEOZ as the OpenID Provider of the domain systems (docs/integration.md).

``provider.py`` is what the web layer (``web/oidc.py``) asks; ``server.py`` configures
Authlib's authorization server; the other modules keep its state: ``clients.py`` the
registered domain systems, ``keys.py`` the signing keys, ``authorizations.py`` the requests
waiting for the person, ``sso.py`` the single sign-on sessions, ``codes.py`` the codes and
tokens, ``claims.py`` what a domain system learns of a person, ``logout.py`` the back-channel
logouts and their sender.
"""
