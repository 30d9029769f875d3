"""The logout token: what a domain system receives when a UEOZ session ends.

OpenID Connect Back-Channel Logout 1.0, 2.4. Ending an SSO session (provider.py) writes one
row a domain system in ``backchannel_logouts``; the logout sender (workers/logouts.py)
delivers them. docs/integration.md ("Logout") says what a domain system must answer.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from joserfc import jwt

from ..db.models import BackchannelLogout
from .keys import ALGORITHM, SigningKeys

EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: How long a logout token is valid once signed (it is signed at each try).
TOKEN_LIFETIME = timedelta(minutes=2)


def logout_token(keys: SigningKeys, *, issuer: str, row: BackchannelLogout, now: datetime) -> str:
    """Sign the logout token for one domain system (Back-Channel Logout 2.4)."""
    claims = {
        "iss": issuer,
        "aud": row.client_id,
        "iat": int(now.timestamp()),
        "exp": int((now + TOKEN_LIFETIME).timestamp()),
        "jti": secrets.token_urlsafe(16),
        "sub": row.subject,
        "sid": row.sid,
        "events": {EVENT: {}},
    }
    key = keys.signing_key()
    return jwt.encode(
        {"alg": ALGORITHM, "kid": key.kid, "typ": "logout+jwt"}, claims, key, [ALGORITHM]
    )
