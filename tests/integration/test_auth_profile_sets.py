"""An auth profile serves all sets or only those in its ``set_ids`` (SQLite and PostgreSQL).

Before, an admin limited to one set could attach any profile by its id: qhook then sent that
set's results to another team's ERP with that team's credentials.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from qhook.context import AppContext
from qhook.services import audit, auth_profiles
from qhook.store.tables import signals, workflows
from tests.conftest import auth
from tests.integration.test_limited_admin import PROFILE
from tests.support.delivery import (
    attempts_of,
    delivery,
    enqueue,
    make_signal,
    receiver,
    running_worker,
    until,
)
from tests.support.workflows import make_set


def workflow(set_id: int, profile_id: int) -> dict[str, Any]:
    return {
        "name": "release to ERP",
        "set_id": set_id,
        "triggers": {"entry": True},
        "signals": [
            {"type": "webhook", "url": "https://erp.example.com/batches", "auth_profile_id": profile_id}
        ],
    }


def field_of(answer: httpx.Response) -> str:
    return str(answer.json()["details"][0]["field"])


async def test_only_workflows_of_the_profiles_sets_may_use_it(
    api: httpx.AsyncClient, client: httpx.AsyncClient, ctx: AppContext, make_key: Any
) -> None:
    plant_a = await make_set(api, name="Plant A")
    plant_b = await make_set(api, name="Plant B")
    bea = auth(make_key("admin", "bea", [plant_b]))
    created = await api.post("/api/v1/auth-profiles", json={**PROFILE, "set_ids": [plant_a, plant_a]})
    assert created.status_code == 201, created.text
    assert created.json()["set_ids"] == [plant_a]
    profile_id = created.json()["id"]
    count = len((await api.get("/api/v1/workflows")).json())

    # Plant B's admin, and even the full admin, may not put Plant A's credentials on Plant B.
    for refused in (
        await client.post("/api/v1/workflows", json=workflow(plant_b, profile_id), headers=bea),
        await api.post("/api/v1/workflows", json=workflow(plant_b, profile_id)),
    ):
        assert refused.status_code == 422, refused.text
        assert field_of(refused) == "signals[0].auth_profile_id"
        assert f"serves only set(s) {plant_a}" in refused.json()["error"]
    assert len((await api.get("/api/v1/workflows")).json()) == count

    mine = await api.post("/api/v1/workflows", json=workflow(plant_a, profile_id))
    assert mine.status_code == 201, mine.text

    # Narrowing it past a set that uses it would strand that set's deliveries: refused, unchanged.
    narrowed = await api.patch(f"/api/v1/auth-profiles/{profile_id}", json={"set_ids": [plant_b]})
    assert narrowed.status_code == 409, narrowed.text
    signal_id = mine.json()["signals"][0]["id"]
    assert f"signal(s) {signal_id} (workflow 'release to ERP', set {plant_a})" in narrowed.json()["error"]
    (detail,) = narrowed.json()["details"]
    assert detail["field"] == "set_ids" and "of sets left out" in detail["error"]
    assert detail["signals"] == [
        {
            "signal_id": signal_id,
            "workflow_id": mine.json()["id"],
            "workflow": "release to ERP",
            "set_id": plant_a,
            "url": mine.json()["signals"][0]["url"],
        }
    ]
    assert (await api.get(f"/api/v1/auth-profiles/{profile_id}")).json()["set_ids"] == [plant_a]

    # Shared with Plant B too, its admin may use it there.
    widened = await api.patch(f"/api/v1/auth-profiles/{profile_id}", json={"set_ids": [plant_b, plant_a]})
    assert widened.status_code == 200, widened.text
    assert widened.json()["set_ids"] == sorted([plant_a, plant_b])
    theirs = await client.post("/api/v1/workflows", json=workflow(plant_b, profile_id), headers=bea)
    assert theirs.status_code == 201, theirs.text

    # null: every set (as profiles made before set_ids existed).
    every = await api.patch(f"/api/v1/auth-profiles/{profile_id}", json={"set_ids": None})
    assert every.status_code == 200 and every.json()["set_ids"] is None
    entry = audit.list_entries(ctx.db, target_type="auth_profile")[0]
    assert entry.action == "auth_profile.update" and "set_ids" in (entry.details or {})["changed"]


async def test_set_ids_are_checked(api: httpx.AsyncClient) -> None:
    plant = await make_set(api, name="Plant A")
    cases: list[tuple[object, str, str]] = [
        ("1", "set_ids", "a list of set ids ([] for none), or null for every set"),
        ([plant, 0], "set_ids[1]", "a set id (a positive integer)"),
        ([True], "set_ids[0]", "a set id (a positive integer)"),
        ([plant, 9999], "set_ids", "ids of existing sets; there is no set 9999"),
    ]
    for value, field, expected in cases:
        answer = await api.post("/api/v1/auth-profiles", json={**PROFILE, "set_ids": value})
        assert answer.status_code == 422, (value, answer.text)
        assert answer.json()["details"][0] == {"field": field, "error": expected}, value
    assert (await api.get("/api/v1/auth-profiles")).json() == []


async def test_a_deleted_set_leaves_the_profiles_that_served_it(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    plant_a = await make_set(api, name="Plant A")
    plant_b = await make_set(api, name="Plant B")
    profile_id = (
        await api.post("/api/v1/auth-profiles", json={**PROFILE, "set_ids": [plant_a, plant_b]})
    ).json()["id"]
    used = await api.post("/api/v1/workflows", json=workflow(plant_b, profile_id))
    assert used.status_code == 201, used.text

    assert (await api.delete(f"/api/v1/sets/{plant_b}")).status_code == 204
    assert (await api.get(f"/api/v1/auth-profiles/{profile_id}")).json()["set_ids"] == [plant_a]
    [entry] = [e for e in audit.list_entries(ctx.db, target_type="set") if e.action == "set.delete"]
    assert (entry.details or {})["removed_from_auth_profiles"] == ["ERP basic"]
    # A set made now (SQLite never gives an id again) is not served by accident.
    plant_c = await make_set(api, name="Plant C")
    assert plant_c not in (await api.get(f"/api/v1/auth-profiles/{profile_id}")).json()["set_ids"]

    # Its last set gone, it serves none (never every set), and can still be changed.
    assert (await api.delete(f"/api/v1/sets/{plant_a}")).status_code == 204
    assert (await api.get(f"/api/v1/auth-profiles/{profile_id}")).json()["set_ids"] == []
    changed = await api.patch(f"/api/v1/auth-profiles/{profile_id}", json={"password": "another-pass"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["set_ids"] == []
    refused = await api.post("/api/v1/workflows", json=workflow(plant_c, profile_id))
    assert refused.status_code == 422 and field_of(refused) == "signals[0].auth_profile_id"


async def test_a_delivery_of_a_set_the_profile_does_not_serve_is_never_sent(ctx: AppContext) -> None:
    """The save-time check can be raced (a workflow saved while the profile is narrowed): the
    worker checks again and sends nothing with the credentials."""
    async with receiver() as rx:
        served = make_signal(ctx, rx.url)
        profile = auth_profiles.create_profile(
            ctx,
            {**PROFILE, "allowed_domains": ["127.0.0.1"], "set_ids": [set_of(ctx, served)]},
            actor="test",
        )
        other = make_signal(ctx, rx.url, auth_profile_id=profile.id)  # written past the API's check
        [refused] = enqueue(ctx, other, rx.url, ['{"n": 1}'])
        async with running_worker(ctx):
            row = await until(lambda: (d := delivery(ctx, refused)).status == "failed" and d, timeout=10)
    assert rx.received == []
    [attempt] = attempts_of(ctx, refused)
    assert attempt.error_kind == "auth" and attempt.status_code is None
    assert attempt.error == (
        f"set_ids: auth profile 'ERP basic' serves only set(s) {set_of(ctx, served)}, "
        f"not set {set_of(ctx, other)}"
    )
    assert row.attempt_count == 1 and row.next_attempt_at is None  # permanent: not tried again
    assert "may not use auth profile 'ERP basic'" in (attempt.hint or "")


def set_of(ctx: AppContext, signal_id: int) -> int:
    with ctx.db.reading() as tx:
        return int(
            tx.execute(
                select(workflows.c.set_id)
                .join(signals, signals.c.workflow_id == workflows.c.id)
                .where(signals.c.id == signal_id)
            ).scalar_one()
        )


async def test_narrowing_allowed_domains_past_a_signal_that_uses_it_is_refused(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """It was a 200: the signal's deliveries then failed at send time and its workflow refused
    every later PATCH, even {"active": false}."""
    plant = await make_set(api, name="Plant A")
    profile_id = (await api.post("/api/v1/auth-profiles", json=PROFILE)).json()["id"]
    used = await api.post("/api/v1/workflows", json=workflow(plant, profile_id))
    assert used.status_code == 201, used.text
    signal_id = used.json()["signals"][0]["id"]
    for domains in (["other.example.com"], ["erp.example.com:8443"]):
        narrowed = await api.patch(f"/api/v1/auth-profiles/{profile_id}", json={"allowed_domains": domains})
        assert narrowed.status_code == 409, narrowed.text
        assert f"signal(s) {signal_id} (workflow 'release to ERP', set {plant})" in narrowed.json()["error"]
        (detail,) = narrowed.json()["details"]
        assert detail["field"] == "allowed_domains"
        assert [u["signal_id"] for u in detail["signals"]] == [signal_id]
    # Deleting it would leave the signal with no credentials: refused, naming the signal.
    deleted = await api.delete(f"/api/v1/auth-profiles/{profile_id}")
    assert deleted.status_code == 409, deleted.text
    (detail,) = deleted.json()["details"]
    assert "field" not in detail and detail["error"] == deleted.json()["error"]
    assert [(u["signal_id"], u["workflow_id"]) for u in detail["signals"]] == [(signal_id, used.json()["id"])]
    assert (await api.get(f"/api/v1/auth-profiles/{profile_id}")).status_code == 200
    assert (await api.get(f"/api/v1/auth-profiles/{profile_id}")).json()["allowed_domains"] == [
        "erp.example.com"
    ]
    wider = await api.patch(
        f"/api/v1/auth-profiles/{profile_id}",
        json={"allowed_domains": ["erp.example.com:443", "mes.example.com"]},
    )
    assert wider.status_code == 200, wider.text


async def test_a_workflow_broken_by_a_change_elsewhere_can_still_be_turned_off(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """A deleted transfer target (or a deactivated field) made every PATCH of the workflow a 422,
    {"active": false} too: it could not be stopped."""
    plant = await make_set(api, name="Plant A")
    target = await make_set(api, name="Archive")
    made = await api.post(
        "/api/v1/workflows",
        json={
            "name": "copy to archive",
            "set_id": plant,
            "triggers": {"entry": True},
            "signals": [
                {"type": "transfer", "set_id": target, "values": {"batchnumber_": "{{ batchnumber_ }}"}}
            ],
        },
    )
    assert made.status_code == 201, made.text
    assert (await api.delete(f"/api/v1/sets/{target}")).status_code == 204
    renamed = await api.patch(f"/api/v1/workflows/{made.json()['id']}", json={"name": "x"})
    assert renamed.status_code == 422  # the document is broken: saving it is refused, as before
    off = await api.patch(f"/api/v1/workflows/{made.json()['id']}", json={"active": False})
    assert off.status_code == 200, off.text
    assert off.json()["active"] is False
    entry = audit.list_entries(ctx.db, target_type="workflow")[0]
    assert entry.action == "workflow.update" and entry.details == {"active": False}
