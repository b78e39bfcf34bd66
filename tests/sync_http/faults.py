"""A network between crew devices and a live server that can misbehave on request.

`FaultyTransport.send(device, path, json) -> httpx.Response | None` is the one seam a test
device talks through. Before a call, `transport.plan(fault)` says what the network does
to that one exchange; afterwards it is back to behaving. None means the device saw a
network error (whether or not the server received and committed the request).

Faults (a push's body is `{client_id, schema_version, mutations}`):

    ok              deliver, hand back the response
    drop_request    nothing reaches the server
    drop_response   the server receives and commits; the device sees a network error
    duplicate       the same request arrives twice; the device sees the second answer
    reorder         a later slice of the batch arrives before the earlier one (the server
                    answers the gap with expected_seq); the device sees the last answer
    truncate        only a prefix of the batch arrives (a proxy cut the body short)
    late_duplicate  a request this device sent earlier arrives again, just before this one

Only pushes are reordered, truncated or replayed late; a pull can be dropped either way
or duplicated. Every request that reaches the server is reported to `observer` before it
is sent and with its response afterwards, so a test can check every answer the server
gives, including those the device never sees.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx

__all__ = ["FAULTS", "PULL_FAULTS", "Fault", "FaultyTransport", "Observer"]

FaultKind = Literal["ok", "drop_request", "drop_response", "duplicate", "reorder", "truncate",
                    "late_duplicate"]
FAULTS: tuple[FaultKind, ...] = ("ok", "drop_request", "drop_response", "duplicate", "reorder",
                                 "truncate", "late_duplicate")
PULL_FAULTS: tuple[FaultKind, ...] = ("ok", "drop_request", "drop_response", "duplicate")


@dataclass(frozen=True)
class Fault:
    kind: FaultKind = "ok"
    split: int = 1  # reorder / truncate: where the batch is cut; late_duplicate: which old request


OK = Fault()


class Observer(Protocol):
    def before(self, device: Any, path: str, body: dict[str, Any]) -> None: ...

    def after(self, device: Any, path: str, body: dict[str, Any], response: httpx.Response) -> None: ...


class FaultyTransport:
    def __init__(self, base_url: str, observer: Observer, *, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self.observer = observer
        self.timeout = timeout
        self.client = httpx.Client(base_url=base_url, timeout=timeout)
        self._plan = OK
        self.history: dict[str, list[dict[str, Any]]] = defaultdict(list)  # client_id -> push bodies
        self.delivered = 0  # requests that reached the server

    def plan(self, fault: Fault) -> None:
        """What the network does to the next exchange (only that one)."""
        self._plan = fault

    def reconnect(self) -> None:
        """Drop pooled connections (after a server restart)."""
        self.client.close()
        self.client = httpx.Client(base_url=self.base_url, timeout=self.timeout)

    def close(self) -> None:
        self.client.close()

    def send(self, device: Any, path: str, json: dict[str, Any]) -> httpx.Response | None:
        fault, self._plan = self._plan, OK
        is_push = path.endswith("/push")
        kind = fault.kind if is_push or fault.kind in PULL_FAULTS else "ok"
        mutations = json.get("mutations", [])
        if is_push:
            earlier = list(self.history[json["client_id"]])
            self.history[json["client_id"]].append(json)
        if kind == "drop_request":
            return None
        if kind == "drop_response":
            self._deliver(device, path, json)
            return None
        if kind == "duplicate":
            self._deliver(device, path, json)
            return self._deliver(device, path, json)
        if kind == "reorder" and len(mutations) >= 2:
            cut = min(max(fault.split, 1), len(mutations) - 1)
            self._deliver(device, path, {**json, "mutations": mutations[cut:]})
            return self._deliver(device, path, {**json, "mutations": mutations[:cut]})
        if kind == "truncate" and len(mutations) >= 2:
            cut = min(max(fault.split, 1), len(mutations) - 1)
            return self._deliver(device, path, {**json, "mutations": mutations[:cut]})
        if kind == "late_duplicate" and earlier:
            self._deliver(device, path, earlier[fault.split % len(earlier)])
        return self._deliver(device, path, json)

    def _deliver(self, device: Any, path: str, body: dict[str, Any]) -> httpx.Response:
        self.observer.before(device, path, body)
        response = self.client.post(path, json=body, headers=device.headers)
        self.delivered += 1
        self.observer.after(device, path, body, response)
        return response
