"""Routers mounted outside /api/v1: the AlisQI-compatible API, the inspector, the UI, metrics."""

from __future__ import annotations

from fastapi import APIRouter

from qhook.api import compat as compat_routes
from qhook.api import inspect
from qhook.api import metrics as metrics_routes
from qhook.web import routes as web_routes

ALL: list[APIRouter] = [inspect.router]
ALL.append(metrics_routes.router)
ALL.append(compat_routes.router)
ALL.append(web_routes.router)
