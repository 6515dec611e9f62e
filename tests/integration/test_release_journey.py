"""The users' own question, end to end through the public API on both databases.

Did the released batch reach the ERP when it should, exactly as it was at that moment, signed and
authenticated? And did no secret leak into any response, attempt or log line on the way?
"""

from __future__ import annotations

import logging

import httpx
import pytest
from standardwebhooks import Webhook

from qhook.context import AppContext
from tests.support.delivery import attempts_of, receiver, running_worker, until
from tests.support.workflows import add_result, events_of, make_set, patch_result

API_KEY_VALUE = "erp-api-key-7f3a9c1d2e"
SIGNING_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_released_batch_reaches_erp_as_it_was_without_leaking_secrets(
    api: httpx.AsyncClient, ctx: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with receiver() as erp:
        profile = await api.post(
            "/api/v1/auth-profiles",
            json={
                "name": "ERP prod",
                "type": "header",
                "header_name": "X-API-Key",
                "header_value": API_KEY_VALUE,
                "allowed_domains": ["127.0.0.1"],
            },
        )
        assert profile.status_code == 201, profile.text
        set_id = await make_set(api)
        created = await api.post(
            "/api/v1/workflows",
            json={
                "name": "Released batches to ERP",
                "set_id": set_id,
                "triggers": {"entry": True, "modification": {"fields": ["status_"]}},
                "filter": {"all": [{"field": "status_", "op": "eq", "value": "released"}]},
                "signals": [
                    {
                        "type": "webhook",
                        "url": erp.url,
                        "auth_profile_id": profile.json()["id"],
                        "secret": SIGNING_SECRET,
                        "subject": "Batch {{ batchnumber_ }} released",
                        "message": "Released by {{ actor }}",
                    }
                ],
            },
        )
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]

        result_id = await add_result(api, set_id, batchnumber_="B-1234", status_="draft", ph_=6.8)
        await patch_result(api, set_id, result_id, status_="released")
        # A later change to another field must neither fire nor alter what was sent at release.
        await patch_result(api, set_id, result_id, ph_=7.4)

        async with running_worker(ctx):
            await until(lambda: len(erp.received) >= 1)
            hub = await api.get("/api/v1/deliveries", params={"result_id": result_id})
            [item] = hub.json()["items"]
            await until(lambda: attempts_of(ctx, item["id"]))

    [request] = erp.received
    payload = Webhook(SIGNING_SECRET).verify(request.body, request.headers)
    assert payload["action"] == "modified"
    assert payload["subject"] == "Batch B-1234 released"
    assert payload["message"] == "Released by alice"
    assert payload["results"]["@id"] == result_id
    assert payload["results"]["status_"] == "released"
    assert payload["results"]["ph_"] == 6.8  # as it was at release, not the later 7.4
    assert payload["changes"] == {"status_": {"old": "draft", "new": "released"}}
    assert payload["workflow"] == {"id": workflow_id, "name": "Released batches to ERP"}
    assert request.headers["X-API-Key"] == API_KEY_VALUE
    assert request.headers["webhook-id"] == item["webhook_id"]

    # Why each event did or did not fire is on the trail.
    new, released, ph_change = await events_of(api, result_id)
    assert [e["evaluations"][0]["fired"] for e in (new, released, ph_change)] == [False, True, False]
    assert "filter not met" in new["evaluations"][0]["reason"]
    assert "status_" in ph_change["evaluations"][0]["reason"]

    # No secret in any response, attempt or log line.
    detail = await api.get(f"/api/v1/deliveries/{item['id']}")
    assert detail.status_code == 200
    responses = [
        detail.text,
        (await api.get("/api/v1/deliveries")).text,
        (await api.get(f"/api/v1/workflows/{workflow_id}")).text,
        (await api.get("/api/v1/workflows")).text,
        (await api.get("/api/v1/auth-profiles")).text,
        (await api.get(f"/api/v1/auth-profiles/{profile.json()['id']}")).text,
        (await api.get("/api/v1/audit")).text,
    ]
    recorded = [str(a.request_headers) for a in attempts_of(ctx, item["id"])]
    logs = [record.getMessage() + str(record.__dict__) for record in caplog.records]
    assert any(getattr(record, "action", None) == "worker_start" for record in caplog.records)
    for secret in (API_KEY_VALUE, SIGNING_SECRET, SIGNING_SECRET.removeprefix("whsec_")):
        for text in responses + recorded + logs:
            assert secret not in text
    assert detail.json()["request"]["headers"]["X-API-Key"] != API_KEY_VALUE
