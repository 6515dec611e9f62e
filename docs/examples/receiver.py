"""A minimal qhook webhook receiver: verify, drop duplicates and stale versions, answer at once,
work in the background.

Run it:

    pip install fastapi uvicorn standardwebhooks
    QHOOK_WEBHOOK_SECRET=whsec_... uvicorn receiver:app --port 9000

and point a webhook signal at http://<this host>:9000/webhooks/qhook. Plain http:// needs
QHOOK_ALLOW_HTTP=true, and a private or loopback address needs its network in
QHOOK_ALLOWED_TARGET_NETWORKS (127.0.0.0/8 for this machine, or your LAN range such as
192.168.1.0/24), both set for ``qhook serve`` and for every ``qhook worker``: without the first the
workflow is refused when saved, without the second every delivery fails at once (ssrf_blocked).
See docs/receiving.md. Every event it accepts is appended to a JSON Lines file (RECEIVER_LOG,
default received.jsonl); replace ``process`` with the call into your own system.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

webhook = Webhook(os.environ["QHOOK_WEBHOOK_SECRET"])  # the signal's whsec_... secret
log_path = Path(os.environ.get("RECEIVER_LOG", "received.jsonl"))

# Ids already taken. In production keep them in your database (a unique column), so a restart
# or a second instance still recognises a redelivery.
seen: set[str] = set()
# The newest version taken of each result (results["@id"] -> result_version): without the signal's
# "ordered" option a retry of an older change can arrive after a newer one. In production keep it
# beside the data it guards, updated in the same transaction.
newest: dict[int, int] = {}
work: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()


def process(webhook_id: str, event: dict[str, Any]) -> None:
    """The slow part (an ERP call, a database write); here: one line per event in a file."""
    line = {
        "webhook_id": webhook_id,
        "action": event.get("action"),
        "result_version": event.get("result_version"),
        "results": event.get("results"),
    }
    with log_path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def is_stale(event: dict[str, Any]) -> bool:
    """An older version of a result than one already taken (an equal one, from an on_date or manual
    run, shows the same values again and is taken)."""
    results = event.get("results")
    result_id = results.get("@id") if isinstance(results, dict) else None
    version = event.get("result_version")
    if not isinstance(result_id, int) or not isinstance(version, int):
        return False  # payload "result" or a template of your own, or a body from before the key
    if version < newest.get(result_id, 0):
        return True
    newest[result_id] = version
    return False


async def worker() -> None:
    while True:
        webhook_id, event = await work.get()
        try:
            await asyncio.to_thread(process, webhook_id, event)
        except Exception:  # keep going; a real receiver would log and retry from its own queue
            seen.discard(webhook_id)
        finally:
            work.task_done()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(worker())
    yield
    await work.join()  # finish what was accepted before stopping
    task.cancel()


app = FastAPI(lifespan=lifespan)


@app.post("/webhooks/qhook")
async def receive(request: Request) -> Response:
    body = await request.body()  # the raw bytes: the signature covers them exactly
    try:
        event = webhook.verify(body, dict(request.headers))
    except WebhookVerificationError:
        return Response(status_code=401)  # a 4xx that qhook does not retry
    webhook_id = request.headers["webhook-id"]
    if webhook_id in seen:
        return Response(status_code=200)  # a retry or redelivery of something already taken
    seen.add(webhook_id)
    if event.get("action") == "test":  # a send test proves the path; nothing to do with it
        return Response(status_code=202)
    if is_stale(event):
        return Response(status_code=200)  # a newer version of this result was taken already
    await work.put((webhook_id, event))
    return Response(status_code=202)  # at once; the work happens after the answer
