"""``qhook demo``: the whole loop against a running server, in a minute, without leaving the building.

Over HTTP, as any client would: a "Batch release" set with a few results, an inspector bin, the
workflow "Released batches to ERP" pointing at the bin; then one batch is released and the
captured webhook is printed. Everything is found again on the next run (idempotent by name); a
bin that expired is replaced. The API key is made for a "demo" admin in the same database and
revoked at the end, unless one is given with ``--key``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from qhook.errors import Conflict, QhookError
from qhook.settings import Settings

SET_NAME = "Batch release"
WORKFLOW_NAME = "Released batches to ERP"
DEMO_USER = "demo"
DEMO_KEY_LABEL = "qhook demo"
WAIT_S = 30.0
SHOWN_HEADERS = ("content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature")

FIELDS: list[dict[str, Any]] = [
    {"name": "batchnumber_", "label": "Batch number", "type": "text", "required": True},
    {"name": "product_", "label": "Product", "type": "text"},
    {"name": "status_", "label": "Status", "type": "list", "options": ["quarantine", "released", "blocked"]},
    {"name": "assay_", "label": "Assay (%)", "type": "number"},
    {"name": "ph_", "label": "pH", "type": "number"},
    {"name": "operator_", "label": "Released by", "type": "text"},
    {"name": "expiry_", "label": "Expiry date", "type": "date"},
]
RESULTS: list[dict[str, Any]] = [
    {"batchnumber_": "B-2025-0101", "product_": "Paracetamol 500 mg", "status_": "released", "assay_": 99.4},
    {
        "batchnumber_": "B-2025-0102",
        "product_": "Paracetamol 500 mg",
        "status_": "quarantine",
        "assay_": 98.7,
    },
    {"batchnumber_": "B-2025-0103", "product_": "Ibuprofen 400 mg", "status_": "blocked", "assay_": 91.2},
]


class DemoFailed(QhookError):
    """The demo could not finish; the message says what to do."""

    status = 502
    default_message = "The demo could not finish"


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    base_url: str
    set_id: int
    workflow_id: int
    bin_id: str
    bin_url: str
    batchnumber: str
    capture: dict[str, Any]


def default_url(settings: Settings) -> str:
    return (settings.public_url or f"http://127.0.0.1:{settings.port}").rstrip("/")


class Api:
    """A tiny JSON client over urllib (no extra runtime dependency); waits out 429 answers."""

    def __init__(self, base_url: str, key: str, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._key = key
        self._timeout = timeout_s

    def call(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201)) -> Any:
        data = None if body is None else json.dumps(body).encode()
        for _ in range(5):
            request = urllib.request.Request(self.base_url + path, data=data, method=method)
            request.add_header("Authorization", f"Bearer {self._key}")
            request.add_header("Accept", "application/json")
            if data is not None:
                request.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(request, timeout=self._timeout) as response:
                    status, text = response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                status, text = exc.code, exc.read().decode(errors="replace")
                if status == 429:
                    time.sleep(min(float(exc.headers.get("Retry-After") or 2), 30))
                    continue
            except (urllib.error.URLError, OSError) as exc:
                raise DemoFailed(
                    f"no qhook server answers at {self.base_url} ({getattr(exc, 'reason', exc)}); start one"
                    " with `make run` or `qhook serve`, or pass --url"
                ) from exc
            if status not in ok:
                raise DemoFailed(f"{method} {path} answered {status}: {text[:500]}")
            return json.loads(text) if text else None
        raise DemoFailed(f"{method} {path}: still rate limited; try again in a minute")


def demo_key(settings: Settings) -> tuple[str, Callable[[], None]]:
    """A fresh key of the "demo" admin (made if missing) in the server's database, and its revoker."""
    from qhook.context import open_context
    from qhook.services import users

    ctx = open_context(settings)
    try:
        try:
            users.create_user(ctx.db, DEMO_USER, "admin", actor="qhook demo")
        except Conflict:
            pass  # made by an earlier run
        record, plain = users.create_api_key(ctx.db, DEMO_USER, label=DEMO_KEY_LABEL, actor="qhook demo")
    finally:
        ctx.db.dispose()

    def revoke() -> None:
        later = open_context(settings)
        try:
            users.revoke_api_key(later.db, record.id, actor="qhook demo")
        finally:
            later.db.dispose()

    return plain, revoke


def _ensure_set(api: Api) -> int:
    for found in api.call("GET", "/api/v1/sets"):
        if found["name"] == SET_NAME:
            return int(found["id"])
    created = api.call("POST", "/api/v1/sets", {"name": SET_NAME, "kind": "analysis_set", "fields": FIELDS})
    set_id = int(created["id"])
    for values in RESULTS:
        api.call("POST", f"/api/v1/sets/{set_id}/results", {"values": values})
    return set_id


def _live_bin(api: Api, url: str | None) -> tuple[str, str] | None:
    if not url or "/inspect/" not in url:
        return None
    bin_id = url.rstrip("/").rsplit("/", 1)[1]
    try:
        api.call("GET", f"/api/v1/inspector/bins/{urllib.parse.quote(bin_id)}")
    except DemoFailed:
        return None  # expired or deleted
    return bin_id, url


def _workflow_doc(set_id: int, url: str) -> dict[str, Any]:
    return {
        "name": WORKFLOW_NAME,
        "set_id": set_id,
        "active": True,
        "triggers": {"entry": True, "modification": {"fields": ["status_"]}},
        "filter": {"all": [{"field": "status_", "op": "eq", "value": "released"}]},
        "signals": [
            {
                "type": "webhook",
                "url": url,
                "subject": "Batch {{ batchnumber_ }} released",
                "message": "{{ product_ }} batch {{ batchnumber_ }} was released by {{ actor }}.",
            }
        ],
    }


def _ensure_workflow(api: Api, set_id: int) -> tuple[int, str, str]:
    """(workflow id, bin id, bin url): the existing workflow and bin when both still live."""
    existing = next(
        (w for w in api.call("GET", f"/api/v1/workflows?set_id={set_id}") if w["name"] == WORKFLOW_NAME), None
    )
    if existing is not None:
        webhooks = [s for s in existing["signals"] if s["type"] == "webhook" and s.get("active", True)]
        live = _live_bin(api, webhooks[0]["url"]) if webhooks else None
        if live is not None and existing["active"]:
            return int(existing["id"]), live[0], live[1]
    created_bin = api.call("POST", "/api/v1/inspector/bins", {})
    bin_id, bin_url = str(created_bin["id"]), str(created_bin["url"])
    doc = _workflow_doc(set_id, bin_url)
    if existing is None:
        workflow = api.call("POST", "/api/v1/workflows", doc)
    else:
        workflow = api.call("PATCH", f"/api/v1/workflows/{existing['id']}", doc)
    return int(workflow["id"]), bin_id, bin_url


def _release_a_batch(api: Api, set_id: int) -> str:
    """A new batch in quarantine, then released: the modification of status_ fires the workflow."""
    batchnumber = "B-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    created = api.call(
        "POST",
        f"/api/v1/sets/{set_id}/results",
        {
            "values": {
                "batchnumber_": batchnumber,
                "product_": "Paracetamol 500 mg",
                "status_": "quarantine",
                "assay_": 99.1,
                "ph_": 6.8,
                "expiry_": f"{datetime.now(UTC).year + 2}-12-31",
            }
        },
    )
    api.call(
        "PATCH",
        f"/api/v1/sets/{set_id}/results/{created['id']}",
        {"values": {"status_": "released", "operator_": "Jane Doe"}},
    )
    return batchnumber


def _wait_for_capture(api: Api, bin_id: str, batchnumber: str, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        for capture in api.call("GET", f"/api/v1/inspector/bins/{bin_id}/requests"):
            if batchnumber in str(capture.get("body", "")):
                return dict(capture)
        if time.monotonic() > deadline:
            raise DemoFailed(
                f"no delivery arrived in the bin within {wait_s:g} s; is the server running its worker"
                f" (not --no-worker)? See {api.base_url}/api/v1/deliveries"
            )
        time.sleep(1.0)  # the API allows 30 requests a minute per key by default


def run_demo(api: Api, *, wait_s: float = WAIT_S) -> DemoOutcome:
    api.call("GET", "/readyz")
    set_id = _ensure_set(api)
    workflow_id, bin_id, bin_url = _ensure_workflow(api, set_id)
    batchnumber = _release_a_batch(api, set_id)
    capture = _wait_for_capture(api, bin_id, batchnumber, wait_s)
    return DemoOutcome(api.base_url, set_id, workflow_id, bin_id, bin_url, batchnumber, capture)


def show(outcome: DemoOutcome, console: Console) -> None:
    capture = outcome.capture
    base = outcome.base_url
    console.print(
        f"[bold]Set[/] {SET_NAME!r} (id {outcome.set_id}); workflow {WORKFLOW_NAME!r}"
        f" (id {outcome.workflow_id}) sends to the inspector bin {outcome.bin_url}"
    )
    console.print(f"[bold]Released[/] batch {outcome.batchnumber}; qhook delivered:\n")
    console.print(f"[bold]{capture['method']} {capture['path']}[/]")
    headers = capture.get("headers") or {}
    for name in SHOWN_HEADERS:
        if name in headers:
            console.print(f"  {name}: {headers[name]}", highlight=False, soft_wrap=True)
    body = str(capture.get("body", ""))
    try:
        console.print_json(body)
    except ValueError:
        console.print(body, highlight=False, markup=False)
    verdict = capture.get("signature")
    colour = "green" if verdict == "valid" else "red"
    console.print(f"\nStandard Webhooks signature: [bold {colour}]{verdict}[/]\n")
    console.print("[bold]Look around:[/]")
    console.print(f"  UI (sign in):      {base}/ui")
    console.print(f"  The bin, live:     {base}/ui/inspector/{outcome.bin_id}")
    console.print(f"  The workflow:      {base}/ui/workflows/{outcome.workflow_id}")
    console.print(f"  Integration Hub:   {base}/ui/hub")
    console.print(f"  Captured requests: {base}/api/v1/inspector/bins/{outcome.bin_id}/requests")
    console.print(f"  Delivery log:      {base}/api/v1/deliveries?workflow_id={outcome.workflow_id}")
    console.print(f"  API docs:          {base}/api/v1/docs")
