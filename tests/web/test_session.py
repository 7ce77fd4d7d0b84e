"""Session cookies signed with the real secret still expire: the expiry must be an integer
time after now and within one ``web.session_hours`` lifetime (issue 11, section 6)."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from api.web.session import COOKIE, SECRET_FILE, SessionSigner
from flywheel.config import Settings
from tests.web.conftest import set_session_cookie

SECRET = b"s" * 64
NOW = 1_000_000.0
LIFETIME = 3600.0


def mint(signer: SessionSigner, expiry: object, key_id: str = "key1") -> str:
    """A cookie with any expiry, signed as issue() signs (what a holder of the secret, or a
    bug in an older version, could produce). ``expiry`` is written into the JSON verbatim
    when it is a str, so "Infinity" and "NaN" arrive as json.loads parses them."""
    e = expiry if isinstance(expiry, str) else json.dumps(expiry)
    raw = f'{{"k": "{key_id}", "e": {e}, "n": "00"}}'.encode()
    payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return f"{payload}.{signer._sign('session', payload)}"


@pytest.mark.parametrize(
    "expiry",
    [
        '"inf"',  # a string float() accepted
        "Infinity",  # JSON's extension, parsed to float('inf')
        "NaN",
        '"1e308"',
        1e308,
        NOW + LIFETIME + 60,  # later than one lifetime from now
        int(NOW + 10 * LIFETIME),
        NOW + 60.5,  # issue() writes integers only
        True,
        None,
        [NOW + 60],
        int(NOW),  # expired exactly now
    ],
)
def test_expiries_that_are_not_a_time_within_the_lifetime_are_refused(expiry: object) -> None:
    signer = SessionSigner(SECRET, LIFETIME)
    assert signer.verify(mint(signer, expiry), now=NOW) is None


def test_issued_cookies_verify_until_their_expiry() -> None:
    signer = SessionSigner(SECRET, LIFETIME)
    cookie = signer.issue("key1", now=NOW)
    verified = signer.verify(cookie, now=NOW)
    assert verified is not None and verified[:2] == ("key1", NOW + LIFETIME)
    assert signer.verify(cookie, now=NOW + LIFETIME - 1) is not None
    assert signer.verify(cookie, now=NOW + LIFETIME) is None
    assert signer.verify(mint(signer, int(NOW) + 60), now=NOW) is not None


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_cookie_that_never_expires_is_sent_to_log_in(
    engineer_client: TestClient, web_settings: Settings
) -> None:
    good = engineer_client.cookies.get(COOKIE, path="/ui") or ""
    secret = (web_settings.data_dir / SECRET_FILE).read_bytes().strip()
    signer = SessionSigner(secret, web_settings.web.session_hours * 3600)
    key_id = signer.verify(good)[0]  # type: ignore[index]
    for expiry in ('"inf"', "Infinity", "1e300"):
        set_session_cookie(engineer_client, mint(signer, expiry, key_id))
        r = engineer_client.get("/ui/", follow_redirects=False)
        assert r.status_code == 303 and "reason=expired" in r.headers["location"], expiry
    set_session_cookie(engineer_client, good)
    assert engineer_client.get("/ui/", follow_redirects=False).status_code == 200
