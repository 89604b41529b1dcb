"""The admin API: keys, usage reports, the TCO projection, the pilot report, the monthly export."""

from __future__ import annotations

from fastapi import APIRouter

from proxy.admin import exports, keys, reports

routers: tuple[APIRouter, ...] = (keys.router, reports.router, exports.router)
