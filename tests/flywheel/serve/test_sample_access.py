"""sample_access: idempotent grants (also racing ones), and the visibility check."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from flywheel.db import Sample, SampleAccess
from flywheel.db.models import Role, utcnow
from flywheel.errors import NotFoundError
from flywheel.serve.api_keys import KeyInfo
from flywheel.serve.sample_access import grant, visible_sample, visible_to
from tests.conftest import sample_row


def _key(role: Role, tenant: str) -> KeyInfo:
    return KeyInfo("k", "test key", role, tenant, utcnow(), None)


def _grants(ws) -> set[tuple[str, str]]:
    with ws.db.session() as s:
        return {
            (sid, t) for sid, t in s.execute(select(SampleAccess.sample_id, SampleAccess.tenant))
        }


@pytest.fixture
def ids(workspace) -> list[str]:
    rows = [sample_row(n) for n in (1, 2, 3)]
    with workspace.db.session() as s:
        s.add_all(rows)
    return [r.id for r in rows]


def test_grant_is_idempotent(workspace, ids):
    a, b, c = ids
    grant(workspace.db, [a, b, a], "shop")
    grant(workspace.db, [b, c], "shop")  # b again, with a new one
    grant(workspace.db, [a], "other")
    grant(workspace.db, [], "shop")
    assert _grants(workspace) == {(a, "shop"), (b, "shop"), (c, "shop"), (a, "other")}


def test_grant_in_a_session_joins_its_transaction(workspace, ids):
    with pytest.raises(RuntimeError), workspace.db.session() as s:
        grant(s, ids[:1], "shop")
        raise RuntimeError("the caller's work failed")
    assert _grants(workspace) == set()
    with workspace.db.session() as s:
        grant(s, ids[:1], "shop")
        grant(s, ids[:1], "shop")  # the same pair twice in one transaction
    assert _grants(workspace) == {(ids[0], "shop")}


def test_a_grant_racing_an_uncommitted_one_succeeds(workspace, ids):
    """A second request granting the same pair while the first has not committed waits for
    it, then finds the row there: no IntegrityError. However the two interleave, the
    outcome is the same, so the sleep only makes the overlap likely."""
    errors: list[BaseException] = []
    done = threading.Event()

    def racer() -> None:
        try:
            grant(workspace.db, ids, "shop")
        except BaseException as exc:  # reported below, on the test's thread
            errors.append(exc)
        finally:
            done.set()

    with workspace.db.session() as s:
        grant(s, ids, "shop")
        s.flush()
        thread = threading.Thread(target=racer)
        thread.start()
        done.wait(0.5)  # the racer blocks on our uncommitted rows until we commit
    thread.join(30)
    assert not thread.is_alive() and errors == []
    assert _grants(workspace) == {(sid, "shop") for sid in ids}


def test_visibility(workspace, ids):
    a, b, _ = ids
    grant(workspace.db, [a], "shop")
    shop, other = _key(Role.APP, "shop"), _key(Role.APP, "other")
    engineer = _key(Role.ENGINEER, "ml")
    with workspace.db.session() as s:

        def seen(key: KeyInfo) -> set[str]:
            return set(s.scalars(select(Sample.id).where(visible_to(key))))

        assert seen(shop) == {a}
        assert seen(other) == set()
        assert seen(engineer) == set(ids)
    assert visible_sample(workspace.db, a, shop).id == a
    assert visible_sample(workspace.db, b, engineer).id == b
    unknown = "f" * 64
    with pytest.raises(NotFoundError) as hidden:
        visible_sample(workspace.db, a, other)
    with pytest.raises(NotFoundError) as missing:
        visible_sample(workspace.db, unknown, other)
    assert str(hidden.value).replace(a, unknown) == str(missing.value)
