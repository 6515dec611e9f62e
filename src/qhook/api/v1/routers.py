"""Every /api/v1 router, in the order they appear in the OpenAPI document."""

from __future__ import annotations

from fastapi import APIRouter

from qhook.api.v1 import events, inspector, results, sets, users

ALL: list[APIRouter] = [users.router, inspector.router, sets.router, results.router, events.router]
