"""One persistent JSON-RPC WebSocket to authstore, shared by a whole process.

- Requests carry ids; each waits on its own future, so calls from concurrent HTTP handlers
  interleave on the one socket.
- The socket is reopened with exponential backoff and full jitter whenever it drops. Calls
  waiting for an answer on the lost socket fail with `ConnectionLost`, and `call` retries
  them once on the new socket.
- A state-changing call carries a fresh `idempotency_key` (128 random bits), and its retry
  carries the same one: authstore then answers the first call's result instead of applying
  it twice (a code consumed on the lost socket is not "replayed", a rotated refresh token is
  not "reused"). A call is retried once when its outcome is unknown (socket lost, 1005
  `outcome: unknown`, no answer in time) if it is keyed or a read, and when nothing was
  applied (1005 `outcome: unchanged`, -32009 busy) whatever it is.
  Which methods take a key is read from the server's own `rpc.discover` document, so the
  client works against a server that predates keys (it then never retries a write whose
  outcome is unknown, since a blind retry of `code.consume` or `token.rotate` would revoke
  the grant).
- Subscriptions are re-made on every new socket with `since` = the last cursor seen, so no
  event is missed or seen twice across a reconnect. When that cursor is gone (1006
  `cursor_expired`) or ahead of the log (-32602 `since`, after a restore), events were
  missed: the subscriber's gap handler drops what it believed live, and the subscription
  restarts from a fresh `head`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

log = logging.getLogger("authstore")

# JSON-RPC error codes of authstore's contract (API.md, Errors).
NOT_FOUND, CONFLICT, INVALID_GRANT, INVALID_CLIENT, UNAVAILABLE, CURSOR_EXPIRED = (
    1001, 1002, 1003, 1004, 1005, 1006)
INVALID_PARAMS = -32602
BUSY = -32009  # jsonrpsee: the call was not executed
MAX_BACKOFF = 2.0


def backoff(attempt: int) -> float:
    """Full jitter: a random delay in 0..min(2 s, 50 ms * 2^attempt), so processes that lost
    authstore together do not all reconnect in the same instant."""
    return random.uniform(0, min(MAX_BACKOFF, 0.05 * 2 ** min(attempt, 10)))


class AuthstoreError(Exception):
    """An error answer from authstore (`code`, `data.reason`), or a local failure to reach it."""

    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None):
        super().__init__(f"{code} {message}")
        self.code, self.message, self.data = code, message, data or {}

    @property
    def reason(self) -> str | None:
        return self.data.get("reason")

    @property
    def field(self) -> str:
        return self.data.get("field") or ""


class ConnectionLost(Exception):
    """The socket closed before the answer arrived: the call may or may not have been applied."""


EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
GapHandler = Callable[[], Awaitable[None]]


class _Subscription:
    def __init__(self, method: str, params: dict[str, Any], on_event: EventHandler,
                 on_gap: GapHandler | None):
        self.method, self.params, self.on_event, self.on_gap = method, params, on_event, on_gap
        self.cursor: str | None = params.get("since")
        self.server_id: Any = None


class AuthstoreClient:
    def __init__(self, url: str, api_key: str | None = None, call_timeout: float = 10.0):
        self.url, self.api_key, self.call_timeout = url, api_key, call_timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._sub_requests: dict[int, _Subscription] = {}  # subscribe calls awaiting their id
        self._subs: list[_Subscription] = []
        self._ws: ClientConnection | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._keyed_methods: set[str] | None = None  # methods accepting idempotency_key
        self._background: set[asyncio.Task] = set()

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="authstore-socket")
        await asyncio.wait_for(self._connected.wait(), timeout=30)
        doc = await self.call("rpc.discover")
        self._keyed_methods = {
            m["name"] for m in doc["methods"]
            if any(p["name"] == "idempotency_key" for p in m.get("params", []))
        }

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
        if self._ws:
            await self._ws.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._background.discard)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
                async with connect(self.url, additional_headers=headers, max_size=2**22,
                                   open_timeout=5, ping_interval=20) as ws:
                    self._ws = ws
                    failures = 0
                    reader = asyncio.create_task(self._read(ws))
                    self._connected.set()
                    await self._resubscribe()
                    await reader
            except (OSError, WebSocketException, asyncio.TimeoutError) as e:
                log.warning("authstore connection lost: %s", type(e).__name__)
            finally:
                self._connected.clear()
                self._ws = None
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionLost())
                self._pending.clear()
                self._sub_requests.clear()
                for sub in self._subs:
                    if sub.cursor is None and sub.on_gap:
                        self._spawn(sub.on_gap())
            await asyncio.sleep(backoff(failures))
            failures += 1

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                msg = json.loads(raw)
                if "id" in msg and msg["id"] is not None:
                    # Note a subscription's id before reading on: its first events may follow
                    # in the very next frames.
                    sub = self._sub_requests.pop(msg["id"], None)
                    if sub is not None and "result" in msg:
                        sub.server_id = msg["result"]
                    fut = self._pending.pop(msg["id"], None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                elif str(msg.get("method", "")).endswith(".event"):
                    await self._on_notification(msg["params"])
        except ConnectionClosed:
            pass

    # ---- calls -----------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Call `method`, retried at most once (docs/portal-integration.md, "Lost answers").

        Outcome unknown (the socket dropped, 1005 `outcome: unknown`, no answer within
        `call_timeout`): retried only if keyed (same key, same params: authstore answers the
        first call's result) or a read. Nothing applied (1005 `outcome: unchanged`, -32009
        busy): retried after a short pause whatever the method.
        """
        params = dict(params or {})
        keyed = self._keyed_methods is not None and method in self._keyed_methods
        if keyed:
            # >= 128 random bits: secrets minted under a key are derived from it.
            params.setdefault("idempotency_key", secrets.token_urlsafe(16))
        unknown_safe = keyed or self._is_read(method)
        for attempt in (1, 2):
            try:
                return await self._call_once(method, params)
            except ConnectionLost:
                error = AuthstoreError(UNAVAILABLE, "unavailable",
                                       {"reason": "connection_lost", "outcome": "unknown"})
            except AuthstoreError as e:
                error = e
            if error.code == UNAVAILABLE and error.data.get("outcome") == "unknown":
                retry = unknown_safe
            elif error.code == UNAVAILABLE:
                # Nothing was applied. `not_connected` already waited a whole call_timeout.
                retry = error.reason != "not_connected"
            else:
                retry = error.code == BUSY
            if attempt == 2 or not retry:
                raise error
            log.warning("authstore call %s failed (%s %s), retrying once", method, error.code,
                        error.reason)
            if error.code != UNAVAILABLE or error.data.get("outcome") != "unknown":
                await asyncio.sleep(0.1 + random.uniform(0, 0.1))  # busy or storage down: pause
        raise AssertionError("unreachable")

    @staticmethod
    def _is_read(method: str) -> bool:
        return method.split(".")[-1] in {"get", "list", "authenticate", "ping", "info", "stats",
                                         "discover"}

    async def _call_once(self, method: str, params: dict[str, Any],
                         sub: _Subscription | None = None) -> Any:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=self.call_timeout)
        except asyncio.TimeoutError:
            raise AuthstoreError(UNAVAILABLE, "unavailable",
                                 {"reason": "not_connected", "outcome": "unchanged"}) from None
        ws = self._ws
        assert ws is not None
        req_id = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        if sub is not None:
            self._sub_requests[req_id] = sub
        try:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method,
                                      "params": params}))
            msg = await asyncio.wait_for(fut, timeout=self.call_timeout)
        except ConnectionClosed:
            raise ConnectionLost() from None
        except asyncio.TimeoutError:
            # Sent, never answered: it may have been applied.
            raise AuthstoreError(UNAVAILABLE, "unavailable",
                                 {"reason": "timeout", "outcome": "unknown"}) from None
        finally:
            self._pending.pop(req_id, None)
            self._sub_requests.pop(req_id, None)
            if fut.done() and not fut.cancelled():
                fut.exception()  # mark a ConnectionLost nobody awaited as seen
        if "error" in msg:
            err = msg["error"]
            raise AuthstoreError(err["code"], err.get("message", ""), err.get("data"))
        return msg["result"]

    # ---- subscriptions ---------------------------------------------------------------------

    async def subscribe(self, method: str, params: dict[str, Any], on_event: EventHandler,
                        on_gap: GapHandler | None = None) -> None:
        """Subscribe now and after every reconnect, resuming after the last cursor seen.

        `on_gap` runs whenever events may have been missed: the socket dropped before any
        cursor was known, or the cursor expired (1006) or is ahead of the log (-32602
        `since`). The caller drops whatever it believes live from the stream's silence; a set
        of revocations stays valid.
        """
        sub = _Subscription(method, params, on_event, on_gap)
        self._subs.append(sub)
        await self._subscribe_one(sub)

    async def _resubscribe(self) -> None:
        for sub in self._subs:
            # Run it in the background: the reader must be free to deliver the answer.
            self._spawn(self._subscribe_one(sub))

    async def _subscribe_one(self, sub: _Subscription) -> None:
        """(Re)subscribe `sub` from its cursor. Runs in the background after a reconnect, so it
        handles every failure itself (an exception would be lost with its task)."""
        failures = 0
        while True:
            params = dict(sub.params)
            if sub.cursor is not None:
                params["since"] = sub.cursor
            try:
                await self._call_once(sub.method, params, sub)
                return
            except ConnectionLost:
                return  # the next socket subscribes again
            except AuthstoreError as e:
                if e.code == CURSOR_EXPIRED or (e.code == INVALID_PARAMS and e.field == "since"):
                    # 1006: events were pruned before we read them. -32602 since: the cursor is
                    # ahead of the log (the database was restored or replaced). Either way some
                    # events were missed.
                    log.error("%s: cannot resume from cursor %s (%s %s); dropping cached "
                              "state and restarting from head", sub.method, sub.cursor, e.code,
                              e.reason)
                    try:
                        await self._restart_from_head(sub)
                        continue
                    except (AuthstoreError, ConnectionLost) as e2:
                        log.warning("%s: restart from head failed: %s", sub.method, e2)
                # Busy, storage down, no answer in time, or a fault of ours: log it and try
                # again rather than stop listening without a word.
                log.error("%s failed: %s %s %s", sub.method, e.code, e.reason, e.data.get("detail", ""))
            if self._ws is None:
                return  # the next socket subscribes again
            await asyncio.sleep(backoff(failures + 3))
            failures += 1

    async def _restart_from_head(self, sub: _Subscription) -> None:
        """After a gap: resume at a fresh `head` and tell the subscriber to drop its "believed
        live" state. `on_gap` runs after `head` is read, so whatever it re-checks from then on
        is covered by the stream from `head`."""
        head = (await self._call_once("server.info", {})).get("head")
        sub.cursor = head
        if sub.on_gap:
            await sub.on_gap()

    async def _resume_after_gap(self, sub: _Subscription) -> None:
        try:
            await self._restart_from_head(sub)
        except (AuthstoreError, ConnectionLost) as e:
            log.warning("%s: restart from head failed: %s", sub.method, e)
        await self._subscribe_one(sub)

    async def _on_notification(self, params: dict[str, Any]) -> None:
        sub = next((s for s in self._subs if s.server_id == params.get("subscription")), None)
        if sub is None:
            return
        if "error" in params:
            # The server ended the subscription: resume after the cursor it names, now if we
            # lagged, or on the next socket if it is shutting down.
            err = params["error"]
            if err.get("code") == CURSOR_EXPIRED:
                # Events were pruned before we read them: restart from head (see _subscribe_one).
                log.error("%s closed: cursor expired; dropping cached state, restarting from head",
                          sub.method)
                self._spawn(self._resume_after_gap(sub))
                return
            sub.cursor = err.get("cursor", sub.cursor)
            if err.get("reason") != "shutdown":
                self._spawn(self._subscribe_one(sub))
            return
        event = params["result"]
        sub.cursor = event["cursor"]
        await sub.on_event(event)
