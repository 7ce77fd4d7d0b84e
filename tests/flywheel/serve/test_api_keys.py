from __future__ import annotations

import pytest
from sqlalchemy import select

from flywheel.db import ApiKey
from flywheel.db.models import Role
from flywheel.errors import InvalidInputError, NotFoundError
from flywheel.serve.api_keys import (
    AuthenticationError,
    authenticate,
    create_key,
    list_keys,
    revoke_key,
)


def test_create_authenticate_revoke(workspace):
    info, token = create_key(workspace.db, "engineer", "ml-team", "alice")
    assert token.startswith(f"fw_{info.id}_")
    found = authenticate(workspace.db, token)
    assert found.role == Role.ENGINEER and found.tenant == "ml-team" and found.is_engineer
    with workspace.db.session() as s:
        stored = s.scalars(select(ApiKey)).one()
    assert token.split("_", 2)[2] not in stored.secret_hash  # only the hash is kept
    revoke_key(workspace.db, info.id)
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticate(workspace.db, token)
    assert list_keys(workspace.db)[0].revoked_at is not None


@pytest.mark.parametrize("token", ["", "fw", "fw_x", "xx_a_b", "fw_unknown_secret"])
def test_bad_tokens(workspace, token):
    with pytest.raises(AuthenticationError):
        authenticate(workspace.db, token)


def test_wrong_secret(workspace):
    _, token = create_key(workspace.db, "app", "shop")
    with pytest.raises(AuthenticationError):
        authenticate(workspace.db, token + "x")


def test_bad_role_tenant_and_unknown_id(workspace):
    with pytest.raises(InvalidInputError, match="role"):
        create_key(workspace.db, "admin", "shop")
    with pytest.raises(InvalidInputError, match="tenant"):
        create_key(workspace.db, "app", "no spaces allowed")
    with pytest.raises(NotFoundError):
        revoke_key(workspace.db, "nope")
