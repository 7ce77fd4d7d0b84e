"""Content-addressed, write-once blob store for sample bytes.

A blob's key is the sha256 of its bytes, laid out as ``<root>/blobs/ab/cd/<sha256>`` so no
folder grows past 65,536 entries. Storing the same bytes twice stores them once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flywheel.errors import IntegrityError, InvalidInputError, NotFoundError
from flywheel.store import storage

SHA256_HEX_LEN = 64
HEX = frozenset("0123456789abcdef")
READ_BATCH = 256  # blobs a reader fetches together: enough to hide object-store latency


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unusable_reason(got: bytes | Exception) -> str | None:
    """Why a blob read (``BlobStore.get_many``'s result) leaves its sample unusable; None
    for bytes. A failure that says nothing about the sample (a storage outage) is raised."""
    if isinstance(got, NotFoundError):
        return "blob missing from the store"
    if isinstance(got, IntegrityError):
        return "blob does not match its checksum"
    if isinstance(got, InvalidInputError):  # an id that is no blob key
        return f"unreadable: {got}"
    if isinstance(got, Exception):
        raise got
    return None


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    uri: str
    created: bool  # False when the bytes were already stored (dedup)


class BlobStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self._loc = storage.open_location(root)
        # Folders known to exist: creating them once, not per blob, halves the syscalls.
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def _path(self, sha: str) -> str:
        if len(sha) != SHA256_HEX_LEN or not HEX.issuperset(sha):
            raise InvalidInputError(f"not a sha256 blob key: {sha!r}")
        return self._loc.path("blobs", sha[:2], sha[2:4], sha)

    def uri(self, sha: str) -> str:
        return self._loc.uri(self._path(sha))

    def put(self, data: bytes) -> StoredBlob:
        sha = sha256_hex(data)
        path = self._path(sha)
        parent = path.rsplit("/", 1)[0]
        if parent not in self._dirs:
            self._loc.fs.create_dir(parent, recursive=True)
            with self._dirs_lock:
                self._dirs.add(parent)
        created = storage.write_once(self._loc.fs, path, data, make_parent=False)
        return StoredBlob(sha, self._loc.uri(path), created)

    def put_many(self, items: Sequence[bytes], threads: int = 8) -> list[StoredBlob]:
        """``put`` each item, in order; threads overlap the filesystem's latency.

        All or nothing: if any write fails, the blobs this call created are deleted again.
        """
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
            futures = [pool.submit(self.put, d) for d in items]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            for f in futures:
                if f.exception() is None and f.result().created:
                    self.delete(f.result().sha256)
            raise errors[0]
        return [f.result() for f in futures]

    def get(self, sha: str, verify: bool = True) -> bytes:
        data = storage.read_bytes(self._loc.fs, self._path(sha))
        if verify and sha256_hex(data) != sha:
            raise IntegrityError(f"blob {sha} does not match its checksum")
        return data

    def get_many(
        self, shas: Sequence[str], threads: int = 16, verify: bool = True
    ) -> list[bytes | Exception]:
        """``get`` each key, in order, with the reads overlapped in threads (an object
        store's latency, not its bandwidth, bounds one-at-a-time reads). A read that fails
        comes back as its exception, in its place: one bad blob is that sample's problem,
        and the caller decides which failures are the sample's and which are an outage."""
        if len(shas) <= 1:
            return [self._get_or_error(sha, verify) for sha in shas]
        with ThreadPoolExecutor(max_workers=max(1, min(threads, len(shas)))) as pool:
            return list(pool.map(lambda sha: self._get_or_error(sha, verify), shas))

    def _get_or_error(self, sha: str, verify: bool) -> bytes | Exception:
        try:
            return self.get(sha, verify)
        except Exception as exc:  # returned, not raised: see get_many
            return exc

    def exists(self, sha: str) -> bool:
        return storage.exists(self._loc.fs, self._path(sha))

    def delete(self, sha: str) -> None:
        """Only for undoing a write whose metadata transaction failed."""
        storage.delete(self._loc.fs, self._path(sha))

    # Picklable by root, so DataLoader worker processes can reopen the filesystem.
    def __getstate__(self) -> dict[str, str]:
        return {"root": self.root}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["root"])  # type: ignore[misc]
