"""The admin API: keys, budgets, usage reports, the TCO projection, the pilot report, the
monthly export."""

from __future__ import annotations

from fastapi import APIRouter

from proxy.admin import budgets, exports, keys, reports

routers: tuple[APIRouter, ...] = (
    keys.router,
    budgets.router,
    reports.router,
    exports.router,
)
