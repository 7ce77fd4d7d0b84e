"""The client itself: one keep-alive connection pool, retries only where a replay is safe."""

from __future__ import annotations

import mimetypes
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Self

import httpx

from flywheel.client.errors import FlywheelConnectionError, error_for, is_in_flight
from flywheel.client.records import (
    BatchItemResult,
    BatchResult,
    Check,
    ErrorInfo,
    Feedback,
    FeedbackItem,
    Prediction,
    Readiness,
    UploadResult,
)

ImageInput = bytes | str | os.PathLike[str]

# Errors after which the request may or may not have been processed: retried only when a
# replay is harmless (idempotency keys, content addressing, reads).
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# Errors raised before any byte of the request left: always safe to retry.
_NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_TRANSIENT_STATUS = frozenset({502, 503, 504})
_MAX_DELAY = 30.0


def _read_image(image: ImageInput, default_name: str) -> tuple[str, bytes, str]:
    """(file name, bytes, content type) for a multipart part."""
    if isinstance(image, bytes | bytearray | memoryview):
        return default_name, bytes(image), "application/octet-stream"
    path = Path(image)
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return path.name, path.read_bytes(), ctype


class FlywheelClient:
    """Flywheel's API over one keep-alive connection pool; use it as a context manager.

        with FlywheelClient("http://127.0.0.1:8000", "fw_...", retries=5) as fw:
            pred = fw.predict(Path("digit.png"))
            fb = fw.feedback(pred.prediction_id, "confirm", user_id="u1")
            assert not fb.replayed

    ``retries`` is the number of retries after the first attempt; the wait before retry
    ``n`` (from 0) is ``backoff * 2**n`` seconds scaled by a random factor in [0.5, 1.5)
    (jitter, so many clients do not retry in step), at least the server's ``Retry-After``,
    capped at 30 s. ``transport`` is passed to httpx (tests, proxies, custom TLS).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ValueError("retries and backoff must be >= 0")
        self.retries = retries
        self.backoff = backoff
        self._sleep: Callable[[float], None] = time.sleep  # replaceable in tests
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- transport ----------------------------------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay = self.backoff * 2**attempt * random.uniform(0.5, 1.5)
        retry_after = response.headers.get("Retry-After") if response is not None else None
        if retry_after is not None and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        return min(delay, _MAX_DELAY)

    def _send(
        self,
        method: str,
        path: str,
        *,
        replay_safe: bool = True,
        retry_if: Callable[[httpx.Response], bool] | None = None,
        ok_statuses: frozenset[int] = frozenset(),
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries; the final response, or raise for an error status.

        ``replay_safe``: may the server see this request twice (a key or content addressing
        makes a replay harmless)? If not, only failures before sending and 503 are retried.
        ``retry_if`` overrides which responses are transient. ``ok_statuses`` are error
        statuses returned rather than raised (``/readyz``'s 503 is an answer).
        """
        errors = _TRANSIENT_ERRORS if replay_safe else _NOT_SENT_ERRORS
        statuses = _TRANSIENT_STATUS if replay_safe else frozenset({503})

        def transient(r: httpx.Response) -> bool:
            if r.status_code in ok_statuses:
                return False
            return retry_if(r) if retry_if is not None else r.status_code in statuses

        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, **kwargs)
            except errors as exc:
                if last:
                    raise FlywheelConnectionError(
                        f"{method} {path}: {type(exc).__name__}: {exc} "
                        f"(after {attempt + 1} attempts)"
                    ) from exc
                self._sleep(self._delay(attempt, None))
                continue
            except httpx.TransportError as exc:  # not transient here: report, do not retry
                raise FlywheelConnectionError(
                    f"{method} {path}: {type(exc).__name__}: {exc}"
                ) from exc
            if not last and transient(response):
                response.close()
                self._sleep(self._delay(attempt, response))
                continue
            if response.status_code >= 400 and response.status_code not in ok_statuses:
                raise error_for(response)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    # -- health -------------------------------------------------------------------------

    def health(self) -> bool:
        """True when the process answers ``/healthz`` (raises when it cannot be reached)."""
        return self._send("GET", "/healthz").json().get("status") == "ok"

    def ready(self) -> Readiness:
        """``/readyz``: whether the database, stores, broker and a champion are usable."""
        body = self._send("GET", "/readyz", ok_statuses=frozenset({503})).json()
        checks = {
            name: Check(bool(c.get("ok")), str(c.get("detail", "")))
            for name, c in body.get("checks", {}).items()
        }
        return Readiness(bool(body.get("ready")), MappingProxyType(checks))

    # -- predictions --------------------------------------------------------------------

    def predict(self, image: ImageInput, top_k: int | None = None) -> Prediction:
        """Classify image bytes or an image file with the champion.

        pred = fw.predict(Path("x.png"), top_k=3)
        print(pred.label, pred.confidence, [t.label for t in pred.top_k])
        """
        name, data, ctype = _read_image(image, "image")
        form = {"top_k": str(top_k)} if top_k is not None else None
        r = self._send(
            "POST", "/v1/predict", replay_safe=False, files={"file": (name, data, ctype)}, data=form
        )
        return Prediction.from_json(r.json())

    def predict_sample(self, sample_id: str, top_k: int | None = None) -> Prediction:
        """Classify a sample already stored (by its 64-hex sample id)."""
        form = {"sample_id": sample_id}
        if top_k is not None:
            form["top_k"] = str(top_k)
        r = self._send("POST", "/v1/predict", replay_safe=False, data=form)
        return Prediction.from_json(r.json())

    # -- feedback -----------------------------------------------------------------------

    def feedback(
        self,
        prediction_id: str,
        kind: str,
        user_id: str,
        label: str | None = None,
        idempotency_key: str | None = None,
    ) -> Feedback:
        """Confirm, correct or reject a prediction; returns once the server committed it.

            fb = fw.feedback(pred.prediction_id, "correct", user_id="u1", label="7")
            fb.replayed  # True when this key had already been written (no second row)

        ``kind`` is ``confirm``, ``correct`` (needs ``label``) or ``reject``. Without an
        ``idempotency_key`` a uuid4 is made; it is reused by every retry of this call, and
        is on the result (``fb.idempotency_key``) for callers that retry later themselves.
        """
        key = idempotency_key or str(uuid.uuid4())
        r = self._send(
            "POST",
            "/v1/feedback",
            json=_feedback_body(prediction_id, kind, user_id, label),
            headers={"Idempotency-Key": key},
            # A 409 "in flight" means our own earlier attempt is still being committed:
            # waiting and replaying the key returns its result.
            retry_if=lambda resp: resp.status_code in _TRANSIENT_STATUS or is_in_flight(resp),
        )
        return Feedback.from_json(r.json(), key)

    def feedback_batch(self, items: Iterable[FeedbackItem | Mapping[str, Any]]) -> BatchResult:
        """Send many feedback items in one request; one result per item, in order.

            res = fw.feedback_batch([
                FeedbackItem(p1, "confirm", "u1"),
                {"prediction_id": p2, "kind": "correct", "user_id": "u1", "label": "3"},
            ])
            failed = [r for r in res.results if not r.ok]

        Each item gets its own idempotency key (made when missing), so the whole request is
        safe to retry; items answered 409 "in flight" are resent (with the same keys).
        """
        bodies: list[dict[str, Any]] = []
        for item in items:
            it = item if isinstance(item, FeedbackItem) else FeedbackItem(**item)
            body = _feedback_body(it.prediction_id, it.kind, it.user_id, it.label)
            body["idempotency_key"] = it.idempotency_key or str(uuid.uuid4())
            bodies.append(body)
        if not bodies:
            return BatchResult(0, 0, 0, ())
        results: dict[int, BatchItemResult] = {}
        pending = list(range(len(bodies)))
        attempt = 0
        while pending:
            r = self._send(
                "POST", "/v1/feedback/batch", json={"items": [bodies[i] for i in pending]}
            )
            retry: list[int] = []
            for res in r.json()["results"]:
                index = pending[res["index"]]
                key = bodies[index]["idempotency_key"]
                err = res.get("error")
                if err is not None and res["status"] == 409 and err.get("code") == "conflict":
                    retry.append(index)
                fb = res.get("feedback")
                results[index] = BatchItemResult(
                    index=index,
                    status=int(res["status"]),
                    idempotency_key=key,
                    feedback=Feedback.from_json(fb, key) if fb else None,
                    error=ErrorInfo(err["code"], err["message"]) if err else None,
                )
            if not retry or attempt >= self.retries:
                break
            self._sleep(self._delay(attempt, None))
            attempt += 1
            pending = retry
        ordered = tuple(results[i] for i in range(len(bodies)))
        return BatchResult(
            written=sum(1 for x in ordered if x.feedback and not x.feedback.replayed),
            replayed=sum(1 for x in ordered if x.feedback and x.feedback.replayed),
            failed=sum(1 for x in ordered if x.error),
            results=ordered,
        )

    # -- samples ------------------------------------------------------------------------

    def upload_samples(
        self,
        images: Iterable[ImageInput | tuple[str, bytes]],
        label: str | None = None,
        split: str | None = None,
    ) -> UploadResult:
        """Add images to the pool (``POST /v1/samples``), deduplicated by content.

            res = fw.upload_samples([Path("a.png"), ("b.png", b_bytes)])
            res.added, res.duplicates, [(x.name, x.reason) for x in res.rejected]

        Items are bytes, paths, or ``(name, bytes)``; names identify items in ``duplicates``
        and ``rejected``. ``label``/``split`` (for every file) need an engineer key. If
        every file is refused the server answers 415/422 (``UnsupportedMedia`` /
        ``InvalidRequest``, with ``details`` per file). The store is content-addressed, so
        a retry after a lost answer stores nothing twice (it then reports as duplicates what
        the lost attempt added).
        """
        files = []
        for i, image in enumerate(images):
            if isinstance(image, tuple):
                name, data = image
                ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
            else:
                name, data, ctype = _read_image(image, f"image-{i}")
            files.append(("files", (name, data, ctype)))
        if not files:
            raise ValueError("upload_samples needs at least one image")
        form = {k: v for k, v in (("label", label), ("split", split)) if v is not None}
        r = self._send("POST", "/v1/samples", files=files, data=form or None)
        return UploadResult.from_json(r.json())

    def upload_uris(self, items: Iterable[str | Mapping[str, Any]]) -> UploadResult:
        """Add images by blob URI (``POST /v1/samples/uris``; allowed schemes only).

            fw.upload_uris(["s3://bucket/a.png", {"uri": "s3://bucket/b.png", "label": "3"}])

        Items are URIs or ``{"uri", "label"?, "split"?}`` (label/split: engineer keys).
        """
        body = [{"uri": x} if isinstance(x, str) else dict(x) for x in items]
        if not body:
            raise ValueError("upload_uris needs at least one URI")
        r = self._send("POST", "/v1/samples/uris", json={"items": body})
        return UploadResult.from_json(r.json())


def _feedback_body(
    prediction_id: str, kind: str, user_id: str, label: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"prediction_id": prediction_id, "kind": str(kind), "user_id": user_id}
    if label is not None:
        body["label"] = label
    return body
