"""Keep-alive connections per (scheme, host, port) under one limit on all of them.

The limit counts every connection open or opening, idle ones included, so it bounds the file
descriptors the pool holds. At the limit a request waits in one queue, first come first
served: a connection freed goes to the first waiter (as it is, when it is to the waiter's
host; else it is closed and the waiter connects), and an idle connection to another host is
closed to make room before anyone waits.

Idle connections are handed out most recently used first. One the server closed is dropped
the moment the loop sees it (``Connection.eof_received``); one idle longer than
``KEEPALIVE_S`` is closed when next looked at instead of reused, the server having likely
closed it or being about to.
"""

from __future__ import annotations

import asyncio
import collections
import ssl

from proxy.gateway.relays.http.connection import DISCONNECTED, Connection, ExchangeError
from proxy.gateway.relays.http.request import PoolKey, Target

KEEPALIVE_S = 15.0  # aiohttp's default keep-alive for idle connections, which we had


class Pool:
    def __init__(self, *, limit: int, ssl_context: ssl.SSLContext) -> None:
        self._limit = limit  # 0: no limit
        self._ssl = ssl_context
        self._idle: dict[PoolKey, dict[Connection, None]] = {}
        self._open: set[Connection] = set()
        self._count = 0  # connections open or opening, and slots handed to waiters
        self._waiters: collections.deque[tuple[PoolKey, asyncio.Future[Connection | None]]] = (
            collections.deque()
        )

    def take_idle(self, key: PoolKey) -> Connection | None:
        """The most recently used idle connection to ``key`` that is still fit, if any."""
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            conn, _ = idle.popitem()
            if now - conn.idle_since < KEEPALIVE_S and not conn.closed:
                conn.reused = True
                return conn
            conn.close()
        return None

    async def connect(self, target: Target, *, deadline: float) -> Connection:
        """A new connection, once the limit allows one (waiting for it until ``deadline``)."""
        async with asyncio.timeout_at(deadline):
            while self._waiters and self._waiters[0][1].done():
                self._waiters.popleft()
            if self._waiters or not self._make_room():
                handed = await self._wait(target.key)
                if handed is not None:
                    return handed
            conn = Connection(target.key, self)  # holds the slot from here
            self._open.add(conn)
            try:
                await asyncio.get_running_loop().create_connection(
                    lambda: conn,
                    target.host,
                    target.port,
                    ssl=self._ssl if target.tls else None,
                    server_hostname=target.host if target.tls else None,
                )
            except BaseException:
                conn.close()
                raise
        return conn

    def put(self, conn: Connection) -> None:
        """A connection whose response was read to the end: to the first waiter, or idle."""
        waiters = self._waiters
        while waiters and waiters[0][1].done():
            waiters.popleft()
        if waiters:
            key, fut = waiters[0]
            if key != conn.key:
                conn.close()  # frees the slot for that waiter, who connects
                return
            waiters.popleft()
            conn.reused = True
            fut.set_result(conn)
            return
        conn.idle(asyncio.get_running_loop().time())
        idle = self._idle.get(conn.key)
        if idle is None:
            idle = self._idle[conn.key] = {}
        idle[conn] = None

    def forget(self, conn: Connection) -> None:
        """A connection closed: its slot to the first waiter."""
        if conn not in self._open:
            return
        self._open.discard(conn)
        idle = self._idle.get(conn.key)
        if idle:
            idle.pop(conn, None)
        self._free_slot()

    def close(self) -> None:
        """Close every connection; waiters fail as if the upstream had hung up."""
        for conn in list(self._open):
            conn.close()
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(ExchangeError(DISCONNECTED, replied=False))

    @property
    def size(self) -> int:
        """Connections open or opening."""
        return len(self._open)

    @property
    def idle(self) -> int:
        """Connections waiting in the pool for a request."""
        return sum(len(idle) for idle in self._idle.values())

    def _make_room(self) -> bool:
        """Take a slot for a new connection if the limit allows it, closing an idle
        connection to another host if that is what it takes."""
        if self._limit and self._count >= self._limit:
            victim = next((next(iter(idle)) for idle in self._idle.values() if idle), None)
            if victim is None:
                return False
            victim.close()  # the least recently used of its host; frees its slot
        self._count += 1
        return True

    def _free_slot(self) -> None:
        self._count -= 1
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                self._count += 1
                fut.set_result(None)
                return

    async def _wait(self, key: PoolKey) -> Connection | None:
        """A connection to ``key``, or None: a slot was freed for this waiter to connect."""
        fut: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append((key, fut))
        try:
            handed = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._give_back(fut.result())
            raise
        return handed

    def _give_back(self, handed: Connection | None) -> None:
        if handed is not None:
            self.put(handed)
        else:
            self._free_slot()
