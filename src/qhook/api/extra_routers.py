"""Routers mounted outside /api/v1: the AlisQI-compatible API, the inspector, the UI, metrics."""

from __future__ import annotations

from fastapi import APIRouter

ALL: list[APIRouter] = []
