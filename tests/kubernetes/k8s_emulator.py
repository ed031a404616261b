"""kmock's Kubernetes emulator, taught the few API semantics the backend relies on.

kmock 0.8 stores objects and streams changes, but it stamps no ``uid`` or
``resourceVersion``, ignores ``labelSelector`` and ``timeoutSeconds``, and every watch
replays all objects. A real apiserver does all of these, and the backend's watch code
is only tested if they happen, so this subclass adds them (and nothing else):

- every create, patch and delete gets the next resourceVersion; creates get a uid;
- lists carry the current resourceVersion and honour equality label selectors;
- a watch from a resourceVersion streams only later events, ends after
  ``timeoutSeconds``, and answers ``410 Gone`` once the test has compacted past it.

It runs on its own event loop in a thread, so the synchronous official client (and the
backend's watch threads) talk to it over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import kmock
from kmock._internal import enums, rendering


@dataclass
class _Event:
    rv: int
    resource: Any
    namespace: str | None
    type: str
    raw: dict[str, Any]


class KubeEmulator(kmock.KubernetesEmulator):  # type: ignore[misc]
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.rv = 0
        self.floor = 0  # watches from below this resourceVersion get 410 Gone
        self.log: list[_Event] = []
        self.generation = 0  # bumping it ends every open watch (as an apiserver restart would)
        self.paused = False  # while set, open watches deliver nothing

    async def _handle(self, request: rendering.Request) -> Any:
        action, res = request.action, request.resource
        mutating = res is not None and action in (
            enums.action.CREATE,
            enums.action.UPDATE,
            enums.action.DELETE,
        )
        if mutating and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.rv + 1)
            if action == enums.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        response = await super()._handle(request)
        if mutating and 200 <= response.status < 300:
            self._record(request)
        return response

    def _record(self, request: rendering.Request) -> None:
        data = request.data if isinstance(request.data, dict) else {}
        name = request.name or data.get("metadata", {}).get("name")
        namespace = request.namespace or data.get("metadata", {}).get("namespace")
        key = (request.resource, namespace, name)
        if key not in self.objects:
            return
        obj = self.objects[key]
        self.rv += 1
        if request.action == enums.action.DELETE:
            raw, kind = copy.deepcopy(obj.last.raw), "DELETED"
        else:
            raw = copy.deepcopy(obj.raw)
            kind = "ADDED" if request.action == enums.action.CREATE else "MODIFIED"
        raw.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        if request.action != enums.action.DELETE:
            obj.patch({"metadata": {"resourceVersion": str(self.rv)}})
        self.log.append(_Event(self.rv, request.resource, namespace, kind, raw))

    def _matching(self, request: rendering.Request, namespace: str | None, raw: dict[str, Any]) -> bool:
        if request.namespace is not None and namespace != request.namespace:
            return False
        selector = request.params.get("labelSelector", "")
        labels = raw.get("metadata", {}).get("labels") or {}
        for term in filter(None, selector.split(",")):
            key, _, value = term.partition("=")
            if labels.get(key.strip()) != value.strip():
                return False
        return True

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        items = [
            obj.raw
            for (res, ns, _), obj in self.objects.items()
            if res == request.resource and not obj.deleted and self._matching(request, ns, obj.raw)
        ]
        return {"metadata": {"resourceVersion": str(self.rv)}, "items": items}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""
        since = int(request.params.get("resourceVersion") or 0)
        timeout = float(request.params.get("timeoutSeconds") or 300)
        if since and since < self.floor:
            status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410}
            yield {"type": "ERROR", "object": {**status, "reason": "Expired", "message": f"too old: {since}"}}
            return
        if not since:
            for (res, ns, _), obj in list(self.objects.items()):
                if res == request.resource and not obj.deleted and self._matching(request, ns, obj.raw):
                    yield {"type": "ADDED", "object": obj.raw}
            since = self.rv
        generation, deadline = self.generation, time.monotonic() + timeout
        while time.monotonic() < deadline and generation == self.generation:
            if not self.paused:
                for event in [e for e in self.log if e.rv > since]:
                    since = event.rv
                    if event.resource == request.resource and self._matching(
                        request, event.namespace, event.raw
                    ):
                        yield {"type": event.type, "object": event.raw}
            await asyncio.sleep(0.02)


class EmulatorThread:
    """Runs a KubeEmulator and its HTTP server on an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator: KubeEmulator | None = None
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def start(self) -> EmulatorThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("kmock did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with KubeEmulator() as emulator, kmock.Server(emulator) as server:
            for plural in ("nodes", "pods", "services"):
                emulator.resources[f"v1/{plural}"] = {}
            self.emulator, self.port = emulator, server.port
            self._ready.set()
            await self._stop.wait()

    def call(self, fn: Any) -> Any:
        """Run fn() on the emulator's loop (its state is not thread-safe)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def requests(self) -> list[Any]:
        """Every request the emulator served so far."""
        return list(self.call(lambda: list(self.emulator)))

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
