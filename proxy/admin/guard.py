"""The admin API's guard: every /admin route needs the admin key (TOKENMETER_ADMIN_KEY), except
in the simulated open mode (no key needed, every backend simulated) for loopback clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from proxy.gateway.auth import check_admin
from proxy.gateway.errors import ProxyError
from proxy.gateway.runtime import Runtime


def _runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    try:
        check_admin(
            request.headers,
            rt.settings.effective_admin_key,
            open_mode=rt.admin_open,
            client_host=request.client.host if request.client else None,
        )
    except ProxyError as exc:
        raise HTTPException(exc.status, exc.message) from exc
    return rt


AdminRuntime = Annotated[Runtime, Depends(_runtime)]
