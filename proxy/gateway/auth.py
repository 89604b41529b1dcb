"""Virtual-key checks without a database round trip on the hot path.

Active keys are cached by hash. A background task re-reads the key table whenever the shared
keys generation changes (every create or revoke bumps it, from any process or replica), so a
revocation reaches every replica within ``refresh_interval_s``; in the process that revoked it,
at once. A hash not in the cache costs one indexed lookup of that hash (never a reload of the
table: bad keys are free for anyone to send), so a key created a moment ago works on its first
request; hashes found unknown are remembered, a bounded number of them, oldest forgotten first.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping

from sqlalchemy import Engine

from metering.keys import KeyInfo, find_active_key, hash_key, load_active_keys, read_generation
from proxy.gateway.errors import ProxyError

log = logging.getLogger(__name__)

_MAX_MISSING = 10_000
ANONYMOUS = KeyInfo(id="anonymous", user="", team=None, use_case=None, agent=None)


class KeyCache:
    def __init__(self, engine: Engine, *, refresh_interval_s: float, required: bool) -> None:
        self._engine = engine
        self._interval_s = refresh_interval_s
        self.required = required
        self._generation = -1
        self._keys: dict[str, KeyInfo] = {}
        self._missing: OrderedDict[str, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self._refresh_failing = False

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._poll(), name="tokenmeter-key-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def reload(self) -> None:
        generation, keys = await asyncio.to_thread(load_active_keys, self._engine)
        self._keys, self._generation = keys, generation
        self._missing.clear()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                generation = await asyncio.to_thread(read_generation, self._engine)
                if generation != self._generation:
                    await self.reload()
            except Exception as exc:  # the database may be down: serve on the cached keys
                if not self._refresh_failing:
                    log.warning("key refresh failed (%s); serving on cached keys", exc)
                self._refresh_failing = True
            else:
                self._refresh_failing = False

    async def authenticate(self, token: str | None) -> KeyInfo:
        if not token:
            if self.required:
                raise ProxyError(
                    401,
                    "missing API key: send Authorization: Bearer tm-...",
                    code="invalid_api_key",
                )
            return ANONYMOUS
        digest = hash_key(token)
        info = self._keys.get(digest)
        if info is None and digest not in self._missing:
            info = await self._look_up(digest)
        if info is not None:
            return info
        if self.required:
            raise ProxyError(401, "invalid or revoked API key", code="invalid_api_key")
        return ANONYMOUS

    async def _look_up(self, digest: str) -> KeyInfo | None:
        """A key the cache has not seen: perhaps created a moment ago, so ask the database."""
        try:
            info = await asyncio.to_thread(find_active_key, self._engine, digest)
        except Exception as exc:
            # The database is down. Open mode serves on (the caller is anonymous anyway); with
            # keys required, a key we cannot check is a temporary failure, not a bad key.
            log.warning("cannot check an unseen key, database unavailable: %s", exc)
            if self.required:
                raise ProxyError(
                    503,
                    "cannot verify the API key right now; retry shortly",
                    code="auth_unavailable",
                ) from exc
            return None
        if info is None:
            self._missing[digest] = None
            if len(self._missing) > _MAX_MISSING:  # bad keys are client-chosen: bound them
                self._missing.popitem(last=False)
        else:
            self._keys[digest] = info
        return info


def bearer_token(headers: Mapping[str, str], *, allow_x_api_key: bool = False) -> str | None:
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    if allow_x_api_key:
        return headers.get("x-api-key") or None
    return None


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_admin(
    headers: Mapping[str, str],
    admin_key: str | None,
    *,
    open_mode: bool,
    client_host: str | None = None,
) -> None:
    """The admin key, always; with none set, only ``open_mode`` (every backend simulated and
    keys not required) lets a loopback client in: nothing real to spend or protect there."""
    token = bearer_token(headers, allow_x_api_key=True)
    if admin_key is None:
        if open_mode and (client_host in _LOOPBACK or (client_host or "").startswith("127.")):
            return
        raise ProxyError(
            401, "admin API disabled: set TOKENMETER_ADMIN_KEY", code="invalid_api_key"
        )
    if token is None or not secrets.compare_digest(token.encode(), admin_key.encode()):
        raise ProxyError(401, "admin key required", code="invalid_api_key")
