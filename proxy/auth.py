"""Virtual-key checks without a database round trip on the hot path.

Active keys are cached by hash. A background task re-reads the key table whenever the shared
keys generation changes (every create or revoke bumps it, from any process or replica), so a
revocation reaches every replica within ``refresh_interval_s``; in the process that revoked it,
at once. A hash not in the cache is looked up in the database once, so a key created a moment ago
works on its first request.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping

from sqlalchemy import Engine

from metering.keys import KeyInfo, hash_key, load_active_keys, read_generation
from proxy.errors import ProxyError

log = logging.getLogger(__name__)

ANONYMOUS = KeyInfo(id="anonymous", user="", team=None, use_case=None, agent=None)


class KeyCache:
    def __init__(self, engine: Engine, *, refresh_interval_s: float, required: bool) -> None:
        self._engine = engine
        self._interval_s = refresh_interval_s
        self.required = required
        self._generation = -1
        self._keys: dict[str, KeyInfo] = {}
        self._missing: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.reload()
        self._task = asyncio.create_task(self._poll(), name="tokenmeter-key-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def reload(self) -> None:
        generation, keys = await asyncio.to_thread(load_active_keys, self._engine)
        self._keys, self._generation, self._missing = keys, generation, set()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                generation = await asyncio.to_thread(read_generation, self._engine)
                if generation != self._generation:
                    await self.reload()
            except Exception:  # the database may be down: keep serving on the cached keys
                log.warning("key refresh failed; serving on cached keys", exc_info=True)

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
            await self.reload()
            info = self._keys.get(digest)
            if info is None:
                self._missing.add(digest)
        if info is not None:
            return info
        if self.required:
            raise ProxyError(401, "invalid or revoked API key", code="invalid_api_key")
        return ANONYMOUS


def bearer_token(headers: Mapping[str, str], *, allow_x_api_key: bool = False) -> str | None:
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    if allow_x_api_key:
        return headers.get("x-api-key") or None
    return None


def check_admin(headers: Mapping[str, str], admin_key: str | None, *, open_mode: bool) -> None:
    token = bearer_token(headers, allow_x_api_key=True)
    if admin_key is None:
        if open_mode:
            return
        raise ProxyError(
            401, "admin API disabled: set TOKENMETER_ADMIN_KEY", code="invalid_api_key"
        )
    if token is None or not secrets.compare_digest(token.encode(), admin_key.encode()):
        raise ProxyError(401, "admin key required", code="invalid_api_key")
