"""List-then-watch mirrors of Nodes and pods, each kept by a daemon thread.

The control loop only reads these caches, so a slow or unreachable API server never
blocks a cycle. Each reflector lists, remembers the list's resourceVersion, and
watches from there; a watch that ends is re-opened from the last version seen, and
one the server answers with 410 Gone (the version was compacted away) starts over
with a fresh list, whose result replaces the cache: objects missing from it were
deleted while we were not looking.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class Mirror:
    """Objects by name, plus the names seen deleted (so 'gone' differs from 'not yet seen')."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, Obj] = {}
        self.deleted: dict[str, float] = {}  # name -> monotonic time of the deletion seen
        self.synced = threading.Event()
        self._seq = 0
        self._added_at: dict[str, int] = {}  # name -> sequence number of its insertion

    def upsert(self, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            self._seq += 1
            self.objects[name] = obj
            self._added_at.setdefault(name, self._seq)
            self.deleted.pop(name, None)

    def delete(self, name: str) -> None:
        with self.lock:
            if self.objects.pop(name, None) is not None:
                self.deleted[name] = time.monotonic()
            self._added_at.pop(name, None)
            self._trim()

    def forget(self, names: list[str]) -> None:
        with self.lock:
            for name in names:
                self.objects.pop(name, None)
                self.deleted.pop(name, None)
                self._added_at.pop(name, None)

    def mark(self) -> int:
        with self.lock:
            return self._seq

    def replace(self, items: list[Obj], started: int) -> None:
        """A full list. Objects that are missing from it were deleted, unless they
        entered the mirror after the list began (a create racing the list)."""
        fresh = {o["metadata"]["name"]: o for o in items}
        with self.lock:
            for name in list(self.objects):
                if name not in fresh and self._added_at.get(name, 0) <= started:
                    del self.objects[name]
                    self._added_at.pop(name, None)
                    self.deleted[name] = time.monotonic()
            for name, obj in fresh.items():
                self._seq += 1
                self.objects[name] = obj
                self._added_at.setdefault(name, self._seq)
                self.deleted.pop(name, None)
            self._trim()
        self.synced.set()

    def _trim(self) -> None:
        if len(self.deleted) > 10_000:  # a long-lived server forgets the oldest deletions
            for name in sorted(self.deleted, key=self.deleted.__getitem__)[:5_000]:
                del self.deleted[name]

    def snapshot(self) -> tuple[dict[str, Obj], set[str]]:
        with self.lock:
            return dict(self.objects), set(self.deleted)


class Reflector:
    def __init__(
        self,
        name: str,
        list_fn: Callable[..., Any],
        mirror: Mirror,
        *,
        watch_seconds: int,
        kwargs: dict[str, Any] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.name, self.list_fn, self.mirror = name, list_fn, mirror
        self.kwargs = kwargs or {}
        self.watch_seconds = watch_seconds
        self.on_change = on_change
        self.relists = 0  # full lists after the first (410 Gone, errors): tests and logs
        self.errors = 0
        self.last_error = ""  # for the operator, when the first list never arrives
        self._stop = threading.Event()
        self._resp: Any = None
        self._thread = threading.Thread(target=self._run, name=f"k8s-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        resp = self._resp
        if resp is not None and hasattr(resp, "shutdown"):
            with contextlib.suppress(Exception):
                resp.shutdown()  # unblocks the thread's read (urllib3 >= 2.3)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _list(self) -> str:
        started = self.mirror.mark()
        resp = self.list_fn(**self.kwargs, _preload_content=False, _request_timeout=30)
        body = json.loads(resp.data)
        self.mirror.replace(body.get("items") or [], started)
        self._changed()
        return str((body.get("metadata") or {}).get("resourceVersion") or "")

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _run(self) -> None:
        rv: str | None = None
        first = True
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    if not first:
                        self.relists += 1
                    first = False
                rv = self._watch(rv)
                backoff = 0.2
            except client.ApiException as exc:
                if exc.status == 410:
                    log.info("%s watch expired (410 Gone); re-listing", self.name)
                    rv = None
                    continue
                self._failed(exc, backoff)
                backoff = min(backoff * 2, 10.0)
                if exc.status and exc.status >= 500:
                    rv = None  # the server may have lost our place; start over
            except Exception as exc:  # connection resets, read timeouts: re-watch from rv
                self._failed(exc, backoff)
                backoff = min(backoff * 2, 10.0)

    def _watch(self, rv: str) -> str:
        """One watch request from ``rv`` until the server ends it; the last version seen.

        Raw JSON lines rather than the client's Watch helper: events stay plain dicts
        (no model validation that a new or partial field could break), and an ERROR
        event is turned into the ApiException it stands for (410 Gone among them)."""
        resp = self.list_fn(
            **self.kwargs, watch=True, resource_version=rv, timeout_seconds=self.watch_seconds,
            allow_watch_bookmarks=True, _preload_content=False,
            _request_timeout=(10, self.watch_seconds + 15),
        )  # fmt: skip
        self._resp = resp
        try:
            for line in iter_resp_lines(resp):
                if not line:
                    continue
                event = json.loads(line)
                kind, raw = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise client.ApiException(status=int(raw.get("code") or 500), reason=raw.get("message"))
                rv = str((raw.get("metadata") or {}).get("resourceVersion") or rv)
                if kind in ("ADDED", "MODIFIED"):
                    self.mirror.upsert(raw)
                elif kind == "DELETED":
                    self.mirror.delete(raw["metadata"]["name"])
                if kind != "BOOKMARK":
                    self._changed()
                if self._stop.is_set():
                    break
        finally:
            resp.close()
            resp.release_conn()
        return rv

    def _failed(self, exc: Exception, backoff: float) -> None:
        self.errors += 1
        if isinstance(exc, client.ApiException):
            self.last_error = f"{exc.status} {exc.reason}"
        else:
            self.last_error = f"{type(exc).__name__}: {exc}"
        if not self._stop.is_set():
            log.warning("%s watch failed (%s); retrying in %.1fs", self.name, exc, backoff)
            self._stop.wait(backoff)
