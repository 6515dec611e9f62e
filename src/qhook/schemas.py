"""JSON Schemas qhook publishes (``qhook schema payload``); packaged beside the code they describe."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

PAYLOAD_SCHEMA = "payload_schema.json"


def payload_schema_text() -> str:
    """The JSON Schema of the webhook envelope, as shipped in ``qhook/domain/payload_schema.json``."""
    return resources.files("qhook.domain").joinpath(PAYLOAD_SCHEMA).read_text(encoding="utf-8")


def payload_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(payload_schema_text())
    return loaded
