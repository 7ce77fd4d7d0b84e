"""Browser sessions for engineers: a signed cookie instead of a bearer header.

The cookie holds ``<payload>.<signature>``: the payload is the key id, an expiry and a
random nonce (base64url JSON), the signature an HMAC-SHA256 under the settings' secret. It
carries no secret of the key itself, so a stolen cookie dies with its expiry or with the
key's revocation, which is re-checked against the database (cached for
``api.auth_cache_seconds``, as bearer keys are). Every state-changing request also carries
a CSRF token derived from the same payload, so it is per session and needs no storage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from flywheel.serve.api_keys import KeyInfo

COOKIE = "flywheel_session"
LOGIN_COOKIE = "flywheel_login"  # double-submit token of the login form (login CSRF)
SECRET_FILE = ".session_secret"


def load_or_create_secret(configured: str | None, data_dir: Path) -> bytes:
    """The configured secret, else one generated once and kept in the data dir (0600)."""
    if configured:
        return configured.encode()
    path = Path(data_dir) / SECRET_FILE
    try:
        # O_EXCL: two processes starting together agree on the first one's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        secret = path.read_bytes().strip()
        if len(secret) < 32:
            raise RuntimeError(f"{path} is truncated: delete it to make a new one") from None
        return secret
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_hex(32).encode())
    return path.read_bytes().strip()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    key: KeyInfo
    csrf: str
    expires_at: float


class SessionSigner:
    def __init__(self, secret: bytes, lifetime_s: float) -> None:
        self._secret = secret
        self.lifetime_s = lifetime_s

    def _sign(self, purpose: str, payload: str) -> str:
        return hmac.new(self._secret, f"{purpose}|{payload}".encode(), hashlib.sha256).hexdigest()

    def issue(self, key_id: str, now: float | None = None) -> str:
        expiry = int((now if now is not None else time.time()) + self.lifetime_s)
        payload = _b64(json.dumps({"k": key_id, "e": expiry, "n": secrets.token_hex(8)}).encode())
        return f"{payload}.{self._sign('session', payload)}"

    def verify(self, cookie: str, now: float | None = None) -> tuple[str, float, str] | None:
        """(key id, expiry, csrf token) of a valid, unexpired cookie; None otherwise."""
        payload, _, signature = cookie.partition(".")
        expected = self._sign("session", payload).encode()
        if not payload or not hmac.compare_digest(signature.encode(), expected):
            return None
        try:
            data = json.loads(_unb64(payload))
            key_id, expiry = str(data["k"]), data["e"]
        except (ValueError, KeyError, TypeError):
            return None
        now = now if now is not None else time.time()
        # Only the integer issue() writes, within one lifetime from now: a payload that
        # parses as "inf", NaN or a far-off time (e.g. signed before the lifetime was
        # shortened) would otherwise never expire.
        if type(expiry) is not int or not now < expiry <= now + self.lifetime_s:
            return None
        return key_id, float(expiry), self._sign("csrf", payload)
