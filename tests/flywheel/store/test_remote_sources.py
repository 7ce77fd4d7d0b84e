"""Strict URI parsing and source roots: a client's URI names an object, nothing else."""

from __future__ import annotations

import pytest

from flywheel.errors import InvalidInputError
from flywheel.store.remote_sources import RemoteSourcePolicy, UriRefused, parse_root

ROOT = "s3://bucket/prefix?endpoint_override=minio:9000&scheme=http"
SCHEMES = ["s3", "gs", "memory"]


def _rule(policy: RemoteSourcePolicy, uri: str) -> str:
    with pytest.raises(UriRefused) as err:
        policy.check(uri)
    assert err.value.rule in str(err.value)  # the message names the rule too
    return err.value.rule


def test_accepts_objects_under_a_root_with_the_roots_options() -> None:
    policy = RemoteSourcePolicy([ROOT], SCHEMES)
    obj = policy.check("s3://bucket/prefix/cats/1.png")
    assert (obj.uri, obj.bucket, obj.key) == (
        "s3://bucket/prefix/cats/1.png",
        "bucket",
        "prefix/cats/1.png",
    )
    # The endpoint comes from the configured root, never from the client's URI.
    assert obj.root.options == {"endpoint_override": "minio:9000", "scheme": "http"}
    assert obj.root.uri == "s3://bucket/prefix"


@pytest.mark.parametrize(
    ("uri", "rule"),
    [
        ("s3://bucket/prefix/x.png?endpoint_override=127.0.0.1:47300&scheme=http", "no_query"),
        ("s3://bucket/prefix/x.png?region=us-east-1", "no_query"),
        ("s3://bucket/prefix/x.png#frag", "no_fragment"),
        ("s3://key:secret@bucket/prefix/x.png", "no_credentials"),
        ("s3://bucket:9000/prefix/x.png", "no_endpoint"),
        ("s3://127.0.0.1:22/prefix/x.png", "no_endpoint"),
        ("s3://bucket/prefix/../other/x.png", "no_dot_segments"),
        ("s3://bucket/prefix/./x.png", "no_dot_segments"),
        ("s3://bucket/prefix%2F..%2Fother/x.png", "malformed"),  # escapes hide slashes
        ("s3://bucket/prefix/a\\b.png", "malformed"),
        ("s3://bucket/prefix//x.png", "malformed"),
        ("s3://bucket/", "malformed"),
        ("s3://bucket/prefix/x\x1b[31m.png", "malformed"),
        ("s3://bucket/prefix/gnp.\u202ex.png", "malformed"),  # a bidi override
        ("s3://bu cket/prefix/x.png", "malformed"),
        ("bucket/prefix/x.png", "malformed"),
        ("S3://bucket/prefix/x.png", "malformed"),
        ("file:///etc/passwd", "malformed"),  # no bucket
        ("file://host/etc/passwd", "no_local_paths"),
        ("ftp://bucket/prefix/x.png", "scheme_not_allowed"),
        ("http://bucket/prefix/x.png", "scheme_not_allowed"),
        ("s3://bucket/prefixed/x.png", "outside_roots"),  # a segment boundary, not a prefix
        ("s3://bucket/x.png", "outside_roots"),
        ("s3://other/prefix/x.png", "outside_roots"),
        ("gs://bucket/prefix/x.png", "outside_roots"),
    ],
)
def test_refuses_with_the_rule_broken(uri: str, rule: str) -> None:
    assert _rule(RemoteSourcePolicy([ROOT], SCHEMES), uri) == rule


def test_no_roots_refuses_every_remote_uri() -> None:
    assert _rule(RemoteSourcePolicy([], SCHEMES), "s3://bucket/prefix/x.png") == "no_roots"


def test_a_manifest_needs_no_root_but_is_as_strict() -> None:
    policy = RemoteSourcePolicy([ROOT], SCHEMES, require_root=False)
    obj = policy.check("gs://elsewhere/x.png")
    assert obj.root.options == {} and obj.root.bucket == "elsewhere"  # the default client
    assert policy.check("s3://bucket/prefix/y.png").root.options["scheme"] == "http"
    assert _rule(policy, "s3://elsewhere/x.png?endpoint_override=evil:1") == "no_query"


def test_check_all_keeps_order_and_reasons() -> None:
    out = RemoteSourcePolicy([ROOT], SCHEMES).check_all(
        ["s3://bucket/prefix/a.png", "s3://bucket/a.png"]
    )
    assert not isinstance(out[0], UriRefused) and isinstance(out[1], UriRefused)


@pytest.mark.parametrize(
    "root",
    ["bucket/prefix", "s3://", "s3://bucket/p?endpoint=x", "s3://bad bucket/p", "3s://b/p"],
)
def test_bad_roots_are_configuration_errors(root: str) -> None:
    with pytest.raises(InvalidInputError, match="uri_roots"):
        parse_root(root)
