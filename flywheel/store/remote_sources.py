"""Which remote URIs may be read, and from which filesystem.

A URI sent by a client names an object and nothing else: it is parsed strictly (no query,
fragment, user info, port, escapes or dot segments) and must lie under one of the
configured source roots (``ingest.uri_roots``). The filesystem that reads it is built from
that root, that is from settings: whatever a client puts in a URI can never pick the host,
endpoint, region, scheme or credentials the server uses, so it cannot point the server at
another machine or have it sign requests for one.

A root may carry trusted client options in its own query string, for an S3-compatible
store (``s3://bucket/prefix?endpoint_override=minio:9000&scheme=http``); those are parsed
here, never handed to a URI parser that would accept them from a client.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from flywheel.errors import InvalidInputError
from flywheel.text import is_safe_text

# Bucket (host) part: what S3, GCS and Azure accept as a container name.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{0,221}$", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
# Object keys: no escapes (a %2F would hide a slash from the prefix match), no
# backslashes; control characters are refused by the text rule (``flywheel.text``).
_KEY_FORBIDDEN = re.compile(r"[%\\?#]")
# Options an operator may give a root; everything else in a root's query is refused.
ROOT_OPTIONS = frozenset(
    {"endpoint_override", "scheme", "region", "anonymous", "force_virtual_addressing"}
)


class UriRefused(InvalidInputError):
    """A URI that breaks a rule: ``rule`` names it (stable, for clients and tests)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{message} (rule: {rule})")
        self.rule = rule


@dataclass(frozen=True)
class RemoteObject:
    """A checked URI: the root it lies under and its key inside the root's bucket."""

    uri: str  # normalised, as stored in original_name
    root: SourceRoot
    bucket: str
    key: str


@dataclass(frozen=True)
class SourceRoot:
    """A configured root: ``scheme://bucket/prefix``, plus trusted client options."""

    scheme: str
    bucket: str
    prefix: str  # "" or "a/b", no slashes at either end
    options: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}".rstrip("/")

    def contains(self, scheme: str, bucket: str, key: str) -> bool:
        if (scheme, bucket) != (self.scheme, self.bucket):
            return False
        return not self.prefix or key.startswith(self.prefix + "/")  # a segment boundary


def _split(uri: str) -> tuple[str, str, str]:
    """``scheme://bucket/key`` → (scheme, bucket, key), refusing anything more than that."""
    if not isinstance(uri, str) or "://" not in uri:
        raise UriRefused("malformed", "not a URI of the form scheme://bucket/key")
    scheme, rest = uri.split("://", 1)
    if not _SCHEME.match(scheme):
        raise UriRefused("malformed", f"invalid URI scheme {scheme!r}")
    if "?" in rest:
        raise UriRefused("no_query", "a URI may not carry a query string")
    if "#" in rest:
        raise UriRefused("no_fragment", "a URI may not carry a fragment")
    bucket, _, key = rest.partition("/")
    if "@" in bucket:
        raise UriRefused("no_credentials", "a URI may not carry user info or credentials")
    if ":" in bucket:
        raise UriRefused("no_endpoint", "a URI may not name a port or an endpoint")
    if not _BUCKET.match(bucket):
        raise UriRefused("malformed", "invalid bucket name")
    if _KEY_FORBIDDEN.search(key) or not is_safe_text(key):
        raise UriRefused("malformed", "an object key may not hold %, \\, ? or control characters")
    parts = key.split("/")
    if any(p in (".", "..") for p in parts):
        raise UriRefused("no_dot_segments", "a URI may not hold . or .. segments")
    if not key or any(p == "" for p in parts):
        raise UriRefused("malformed", "a URI must name an object (no empty path segments)")
    return scheme, bucket, key


def parse_root(root: str) -> SourceRoot:
    """A configured root; raises InvalidInputError (a configuration error) if malformed."""
    base, _, query = root.partition("?")
    scheme, sep, rest = base.partition("://")
    bucket, _, prefix = rest.partition("/")
    if not sep or not _SCHEME.match(scheme) or not _BUCKET.match(bucket):
        raise InvalidInputError(f"ingest.uri_roots: {root!r} is not scheme://bucket[/prefix]")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = set(options) - ROOT_OPTIONS
    if unknown:
        raise InvalidInputError(
            f"ingest.uri_roots: {root!r} has unknown options {sorted(unknown)};"
            f" allowed: {sorted(ROOT_OPTIONS)}"
        )
    return SourceRoot(scheme, bucket, prefix.strip("/"), options)


class RemoteSourcePolicy:
    """Checks URIs against the allowed schemes and, when ``require_root``, the roots."""

    def __init__(
        self, roots: Sequence[str], schemes: Sequence[str], require_root: bool = True
    ) -> None:
        self.roots = tuple(parse_root(r) for r in roots)
        self.schemes = frozenset(schemes)
        self.require_root = require_root

    def check(self, uri: str) -> RemoteObject:
        """The object ``uri`` names, or UriRefused naming the rule it broke."""
        scheme, bucket, key = _split(uri)
        if scheme == "file":
            raise UriRefused("no_local_paths", "local paths cannot be ingested this way")
        if scheme not in self.schemes:
            raise UriRefused("scheme_not_allowed", f"URI scheme {scheme!r} is not allowed")
        normalised = f"{scheme}://{bucket}/{key}"
        for root in self.roots:
            if root.contains(scheme, bucket, key):
                return RemoteObject(normalised, root, bucket, key)
        if self.require_root:
            if not self.roots:
                raise UriRefused(
                    "no_roots", "no source roots are configured (ingest.uri_roots is empty)"
                )
            raise UriRefused("outside_roots", "the URI is not under a configured source root")
        # A manifest on the server's own disk: the scheme's default client, no options.
        return RemoteObject(normalised, SourceRoot(scheme, bucket, ""), bucket, key)

    def check_all(self, uris: Sequence[str]) -> list[RemoteObject | UriRefused]:
        out: list[RemoteObject | UriRefused] = []
        for uri in uris:
            try:
                out.append(self.check(uri))
            except UriRefused as exc:
                out.append(exc)
        return out


def option_flag(value: str | None) -> bool:
    """A root option read as a switch: ``1``, ``true`` or ``yes`` (any case) is on."""
    return (value or "").lower() in ("1", "true", "yes")
