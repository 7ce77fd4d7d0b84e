"""API keys: created once (the secret is shown a single time), stored hashed, revocable.

A token reads ``fw_<id>_<secret>``. The id is public and finds the row; the secret is 32
random bytes, so a plain sha256 is enough to store it (slow password hashes exist for
low-entropy human passwords, and would cost milliseconds on every request).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from flywheel.db import ApiKey, Database
from flywheel.db.models import Role, utcnow
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.text import is_safe_text

PREFIX = "fw"
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AuthenticationError(Exception):
    """The token is missing, malformed, unknown or revoked (HTTP 401)."""


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    role: Role
    tenant: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def is_engineer(self) -> bool:
        return self.role == Role.ENGINEER

    @classmethod
    def from_row(cls, row: ApiKey) -> KeyInfo:
        return cls(row.id, row.name, Role(row.role), row.tenant, row.created_at, row.revoked_at)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(db: Database, role: str, tenant: str, name: str = "") -> tuple[KeyInfo, str]:
    """A new key: returns its record and the token, which is not stored anywhere."""
    try:
        role_ = Role(role)
    except ValueError:
        raise InvalidInputError(f"unknown role {role!r}: use app or engineer") from None
    if not TENANT_PATTERN.fullmatch(tenant):  # fullmatch: "$" alone lets "shop\n" through
        raise InvalidInputError(f"tenant {tenant!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if not is_safe_text(name):
        raise InvalidInputError(f"key name {name!r} has control or invisible characters")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    row = ApiKey(
        id=key_id,
        name=name[:200] or f"{role_.value} key",
        role=role_.value,
        tenant=tenant,
        secret_hash=_hash(secret),
        created_at=utcnow(),
    )
    with db.session() as s:
        s.add(row)
        s.flush()
        info = KeyInfo.from_row(row)
    return info, f"{PREFIX}_{key_id}_{secret}"


def list_keys(db: Database) -> list[KeyInfo]:
    with db.session() as s:
        return [KeyInfo.from_row(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.created_at))]


def revoke_key(db: Database, key_id: str) -> KeyInfo:
    """Revoke a key for good; revoking twice is allowed and keeps the first time."""
    with db.session() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            raise NotFoundError(f"no API key {key_id!r}")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        s.flush()
        return KeyInfo.from_row(row)


def parse_token(token: str) -> tuple[str, str]:
    """``fw_<id>_<secret>`` -> (id, secret); AuthenticationError when malformed."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        raise AuthenticationError("malformed API key")
    return parts[1], parts[2]


def authenticate(db: Database, token: str) -> KeyInfo:
    """The key a token belongs to; AuthenticationError if unknown, wrong or revoked."""
    key_id, secret = parse_token(token)
    with db.session() as s:
        row = s.get(ApiKey, key_id)
        info = KeyInfo.from_row(row) if row is not None else None
        expected = row.secret_hash if row is not None else _hash("")
    # Compare even for unknown ids so timing does not reveal which ids exist.
    matches = hmac.compare_digest(expected, _hash(secret))
    if info is None or not matches:
        raise AuthenticationError("unknown API key")
    if info.revoked_at is not None:
        raise AuthenticationError("this API key was revoked")
    return info
