"""/api/v1/workflows on both databases: create, read without secrets, patch signals, secrets, roles."""

from __future__ import annotations

import httpx
from sqlalchemy import select, update

from qhook.context import AppContext
from qhook.services import audit
from qhook.store import definitions
from qhook.store import workflows as workflow_store
from qhook.store.tables import signals
from tests.conftest import auth
from tests.support.workflows import RECEIVER, add_result, make_set, make_workflow


async def test_create_read_list_and_no_secrets(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    created = await make_workflow(
        api,
        set_id,
        triggers={"entry": True, "modification": {"fields": ["status_"]}, "manual": True},
        filter={"all": [{"field": "status_", "op": "eq", "value": "released"}]},
    )
    signal = created["signals"][0]
    assert isinstance(signal["id"], int)
    assert signal["secret"].startswith("whsec_")
    assert signal["timeout_s"] == 15 and signal["max_attempts"] == 12 and signal["max_age"] == "P2D"
    assert signal["payload"] == "envelope" and signal["max_in_flight"] == 10 and signal["ordered"] is False
    one = (await api.get(f"/api/v1/workflows/{created['id']}")).json()
    assert one["signals"][0]["secret_set"] is True
    assert "secret" not in one["signals"][0]
    assert one["triggers"]["modification"] == {"fields": ["status_"]}
    listed = (await api.get("/api/v1/workflows", params={"set_id": set_id})).json()
    assert [w["id"] for w in listed] == [created["id"]]
    assert (await api.get("/api/v1/workflows", params={"set_id": set_id + 1})).json() == []
    # Stored encrypted, never in the clear.
    with ctx.db.reading() as tx:
        secrets = workflow_store.signal_secrets(tx, signal["id"])
    assert secrets is not None and secrets.secret_enc is not None
    assert signal["secret"] not in secrets.secret_enc
    assert ctx.box.decrypt(secrets.secret_enc) == signal["secret"]
    entries = audit.list_entries(ctx.db, target_type="workflow")
    assert entries and entries[0].action == "workflow.create"
    assert signal["secret"] not in str(entries[0].details)


async def test_secret_shown_when_made_never_read_back_and_rotated(
    api: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = await make_set(api)
    given = "whsec_" + "A" * 32
    created = await make_workflow(
        api, set_id, signals=[{"type": "webhook", "url": RECEIVER, "secret": given}]
    )
    wid, sid = created["id"], created["signals"][0]["id"]
    assert created["signals"][0]["secret"] == given
    # Never returned after creation (design.md invariant 6): no route reads it back, and the
    # workflow says only that it is set.
    assert (await api.get(f"/api/v1/workflows/{wid}/signals/{sid}/secret")).status_code == 404
    shown = (await api.get(f"/api/v1/workflows/{wid}")).json()
    assert shown["signals"][0]["secret_set"] is True and given not in str(shown)
    rotate = f"/api/v1/workflows/{wid}/signals/{sid}/rotate-secret"
    assert (await api.post(rotate, headers=auth(editor_key))).status_code == 403
    rotated = await api.post(rotate)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != given
    assert rotated.json()["signal_id"] == sid and rotated.json()["previous_valid_until"] is not None
    assert new not in str((await api.get(f"/api/v1/workflows/{wid}")).json())
    with ctx.db.reading() as tx:
        stored = workflow_store.signal_secrets(tx, sid)
    assert stored is not None and stored.previous_secret_enc is not None
    assert ctx.box.decrypt(stored.previous_secret_enc) == given
    assert stored.previous_secret_until is not None
    # "Rotating" to the secret it signs with already changes nothing: it became its own previous
    # secret, and the one before stopped signing at once (a receiver developer's review).
    again = await api.post(f"/api/v1/workflows/{wid}/signals/{sid}/rotate-secret", json={"secret": new})
    assert again.status_code == 200, again.text
    assert again.json()["previous_valid_until"] == rotated.json()["previous_valid_until"]
    with ctx.db.reading() as tx:
        kept = workflow_store.signal_secrets(tx, sid)
    assert kept is not None and kept.previous_secret_enc is not None
    assert ctx.box.decrypt(kept.secret_enc) == new and ctx.box.decrypt(kept.previous_secret_enc) == given


async def test_patch_keeps_adds_and_deactivates_signals(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    created = await make_workflow(
        api,
        set_id,
        signals=[{"type": "webhook", "url": RECEIVER}, {"type": "webhook", "url": "http://127.0.0.1:9/two"}],
    )
    first, second = (s["id"] for s in created["signals"])
    patched = await api.patch(
        f"/api/v1/workflows/{created['id']}",
        json={
            "name": "Renamed",
            "signals": [
                {"id": first, "type": "webhook", "url": RECEIVER, "subject": "x"},
                {"type": "webhook", "url": "http://127.0.0.1:9/three"},
            ],
        },
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "Renamed"
    ids = [s["id"] for s in body["signals"]]
    assert ids[0] == first and second not in ids and len(ids) == 2
    assert body["signals"][0]["subject"] == "x" and "secret" not in body["signals"][0]
    assert body["signals"][1]["secret"].startswith("whsec_")
    bad = await api.patch(
        f"/api/v1/workflows/{created['id']}",
        json={"signals": [{"id": 9999, "type": "webhook", "url": RECEIVER}]},
    )
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "signals[0].id"


async def test_validation_names_the_place(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api)
    base = {"name": "w", "set_id": set_id, "triggers": {"entry": True}}
    cases = [
        (
            {
                "filter": {
                    "all": [
                        {"field": "ph_", "op": "eq", "value": 1},
                        {"any": [{"field": "ph_", "op": "eq", "value": "x"}]},
                    ]
                }
            },
            "filter.all[1].any[0].value",
        ),
        ({"filter": {"field": "nope_", "op": "eq", "value": 1}}, "filter.field"),
        ({"triggers": {"on_date": {"field": "ph_", "offset": "P1D"}}}, "triggers.on_date.field"),
        ({"signals": [{"type": "webhook", "url": "ftp://x"}]}, "signals[0].url"),
        ({"signals": [{"type": "webhook", "url": RECEIVER, "timeout_s": 61}]}, "signals[0].timeout_s"),
        ({"signals": [{"type": "webhook", "url": RECEIVER, "max_attempts": 0}]}, "signals[0].max_attempts"),
        ({"signals": [{"type": "webhook", "url": RECEIVER, "rate_limit": "lots"}]}, "signals[0].rate_limit"),
        ({"signals": [{"type": "webhook", "url": RECEIVER, "max_age": "two days"}]}, "signals[0].max_age"),
        (
            {"signals": [{"type": "webhook", "url": RECEIVER, "max_in_flight": 101}]},
            "signals[0].max_in_flight",
        ),
        (
            {"signals": [{"type": "webhook", "url": RECEIVER, "headers": {"X-A": 1}}]},
            "signals[0].headers.X-A",
        ),
        (  # qhook sets these itself: they were accepted and silently never sent
            {"signals": [{"type": "webhook", "url": RECEIVER, "headers": {"User-Agent": "ERP-bridge"}}]},
            "signals[0].headers.User-Agent",
        ),
        (
            {"signals": [{"type": "webhook", "url": RECEIVER, "headers": {"X N": "1"}}]},
            "signals[0].headers.X N",
        ),
        (  # a credential belongs in an auth profile: static headers are shown to every viewer
            {"signals": [{"type": "webhook", "url": RECEIVER, "headers": {"authorization": "Bearer x"}}]},
            "signals[0].headers.authorization",
        ),
        (
            {"signals": [{"type": "webhook", "url": RECEIVER, "headers": {"X-Api-Key": "k"}}]},
            "signals[0].headers.X-Api-Key",
        ),
        (  # a vendor's key header is a credential too
            {
                "signals": [
                    {"type": "webhook", "url": RECEIVER, "headers": {"Ocp-Apim-Subscription-Key": "k"}}
                ]
            },
            "signals[0].headers.Ocp-Apim-Subscription-Key",
        ),
        ({"signals": [{"type": "webhook", "url": RECEIVER, "subject": "{{ oops"}]}, "signals[0].subject"),
        (
            {
                "signals": [
                    {
                        "type": "webhook",
                        "url": RECEIVER,
                        "payload": "template",
                        "body_template": "{{ batchnumber_ }}",
                    }
                ]
            },
            "signals[0].body_template",
        ),
        ({"signals": [{"type": "update_result", "values": {"nope_": 1}}]}, "signals[0].values.nope_"),
        ({"signals": [{"type": "transfer", "set_id": 999, "values": {"a_": 1}}]}, "signals[0].set_id"),
        ({"set_id": 999}, "set_id"),
        ({"error_email": "a@"}, "error_email"),  # was taken, and no digest could ever go
        ({"error_email": "ops@example.com, qa@example.com"}, "error_email"),
        ({"error_email": ["ops@example.com"]}, "error_email"),
    ]
    for change, place in cases:
        response = await api.post("/api/v1/workflows", json={**base, **change})
        assert response.status_code == 422, (place, response.text)
        assert response.json()["details"][0]["field"] == place, response.text
    assert (await api.get("/api/v1/workflows")).json() == []  # nothing half-written


async def test_roles_and_delete(api: httpx.AsyncClient, viewer_key: str, editor_key: str) -> None:
    set_id = await make_set(api)
    created = await make_workflow(api, set_id)
    assert (await api.get("/api/v1/workflows", headers=auth(viewer_key))).status_code == 200
    doc = {"name": "w", "set_id": set_id}
    assert (await api.post("/api/v1/workflows", json=doc, headers=auth(editor_key))).status_code == 403
    assert (
        await api.delete(f"/api/v1/workflows/{created['id']}", headers=auth(editor_key))
    ).status_code == 403
    assert (await api.delete(f"/api/v1/workflows/{created['id']}")).status_code == 204
    assert (await api.get(f"/api/v1/workflows/{created['id']}")).status_code == 404


async def test_set_restricted_user_sees_only_its_sets(api: httpx.AsyncClient, make_key) -> None:  # type: ignore[no-untyped-def]
    mine = await make_set(api, "Mine")
    other = await make_set(api, "Other")
    await make_workflow(api, mine)
    theirs = await make_workflow(api, other)
    key = make_key("viewer", "limited", [mine])
    listed = (await api.get("/api/v1/workflows", headers=auth(key))).json()
    assert [w["set_id"] for w in listed] == [mine]
    assert (await api.get(f"/api/v1/workflows/{theirs['id']}", headers=auth(key))).status_code == 403


async def test_preview_and_overlap_warning(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api)
    first = await make_workflow(
        api,
        set_id,
        triggers={"deletion": True},
        filter={"field": "status_", "op": "eq", "value": "released"},
        signals=[
            {
                "type": "webhook",
                "url": RECEIVER,
                "subject": "Batch {{ batchnumber_ }}",
                "message": "{{ actor }}",
            }
        ],
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="released")
    await make_workflow(api, set_id, name="Twin", triggers={"entry": True}, filter=None)
    response = await api.post(
        f"/api/v1/workflows/{first['id']}/preview", json={"result_id": result_id, "action": "new"}
    )
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["would_fire"] is False and "entry is off" in preview["reason"]
    await api.patch(f"/api/v1/workflows/{first['id']}", json={"triggers": {"entry": True}})
    preview = (
        await api.post(
            f"/api/v1/workflows/{first['id']}/preview", json={"result_id": result_id, "action": "new"}
        )
    ).json()
    assert preview["would_fire"] is True
    body = preview["bodies"][0]["body"]
    assert '"subject":"Batch B-1"' in body and '"message":"preview"' in body

    # A change can be tried on a result never modified (it answered "nothing changed"); nothing
    # is stored.
    released = await make_workflow(
        api,
        set_id,
        name="On release",
        triggers={"modification": {"fields": ["status_"]}},
        filter={"field": "status_", "op": "eq", "value": "released"},
    )
    drafted = await add_result(api, set_id, batchnumber_="B-2", status_="draft")
    url = f"/api/v1/workflows/{released['id']}/preview"
    tried = (await api.post(url, json={"result_id": drafted, "values": {"status_": "released"}})).json()
    assert tried["would_fire"] is True, tried
    assert tried["changes"] == {"status_": {"old": "draft", "new": "released"}}
    assert '"status_":{"old":"draft","new":"released"}' in tried["bodies"][0]["body"]
    assert '"result_version":2' in tried["bodies"][0]["body"]  # as the change would make it
    other = (await api.post(url, json={"result_id": drafted, "values": {"ph_": 7}})).json()
    assert other["would_fire"] is False and "status_" in other["reason"], other
    stored = (await api.get(f"/api/v1/sets/{set_id}/results/{drafted}")).json()
    assert stored["values"]["status_"] == "draft" and stored["values"]["ph_"] is None
    for body, field in (
        ({"result_id": drafted, "values": {"status_": "shipped"}}, "values.status_"),
        ({"result_id": drafted, "values": {"batchnumber_": None}}, "values.batchnumber_"),  # required
        ({"result_id": drafted, "action": "new", "values": {"ph_": 7}}, "values"),
    ):
        refused = await api.post(url, json=body)
        assert refused.status_code == 422, refused.text
        assert refused.json()["details"][0]["field"] == field
    assert preview["warnings"] and "Twin" in preview["warnings"][0]
    # Without QHOOK_SMTP_URL an error address and e-mail signals go nowhere: the preview says so.
    mailing = {"error_email": "ops@example.com", "signals": [{"type": "email", "to": ["qa@example.com"]}]}
    assert (await api.patch(f"/api/v1/workflows/{first['id']}", json=mailing)).status_code == 200
    preview = (
        await api.post(
            f"/api/v1/workflows/{first['id']}/preview", json={"result_id": result_id, "action": "new"}
        )
    ).json()
    assert preview["warnings"][-2:] == [
        "error_email is set, but QHOOK_SMTP_URL is empty: no error report is mailed",
        "e-mail signals are queued but not mailed while QHOOK_SMTP_URL is empty",
    ]
    # Nothing was sent: only the deliveries of the real "new" event (the twin fired for it).
    from tests.support.workflows import deliveries_of

    assert all(d.body.find("preview") == -1 for d in deliveries_of(ctx, result_id))


async def test_a_credential_saved_before_the_refusal_can_be_kept_not_changed(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """Every PATCH of such a workflow, even {"active": false}, was refused, and so was sending back
    what GET showed ("[redacted]")."""
    set_id = await make_set(api)
    made = await make_workflow(
        api, set_id, signals=[{"type": "webhook", "url": RECEIVER, "headers": {"X-Plant": "Delft"}}]
    )
    signal_id = made["signals"][0]["id"]
    with ctx.db.transaction() as tx:  # as an older version saved it
        config = tx.execute(select(signals.c.config).where(signals.c.id == signal_id)).scalar_one()
        tx.execute(
            update(signals)
            .where(signals.c.id == signal_id)
            .values(config={**config, "headers": {"X-Api-Key": "key-OLD-77", "X-Plant": "Delft"}})
        )
        definitions.changed(tx)
    url = f"/api/v1/workflows/{made['id']}"

    assert (await api.patch(url, json={"active": False})).status_code == 200
    shown = (await api.get(url)).json()
    assert shown["signals"][0]["headers"] == {"X-Api-Key": "[redacted]", "X-Plant": "Delft"}
    back = await api.patch(url, json={"active": True, "signals": shown["signals"]})
    assert back.status_code == 200, back.text

    def stored() -> dict[str, str]:
        with ctx.db.reading() as tx:
            return dict(
                tx.execute(select(signals.c.config).where(signals.c.id == signal_id)).scalar_one()["headers"]
            )

    assert stored() == {"X-Api-Key": "key-OLD-77", "X-Plant": "Delft"}
    for headers in ({"X-Api-Key": "key-NEW-1"}, {"X-Api-Key": "[redacted]", "Authorization": "Bearer x"}):
        signal = {**shown["signals"][0], "headers": headers}
        refused = await api.patch(url, json={"signals": [signal]})
        assert refused.status_code == 422, refused.text
        assert refused.json()["details"][0]["field"].startswith("signals[0].headers.")
    assert stored() == {"X-Api-Key": "key-OLD-77", "X-Plant": "Delft"}
    # A redacted credential does not follow the signal to another host.
    moved = {**shown["signals"][0], "url": "https://attacker.example.net/steal"}
    refused = await api.patch(url, json={"signals": [moved]})
    assert (
        refused.status_code == 422 and refused.json()["details"][0]["field"] == "signals[0].headers.X-Api-Key"
    )
    assert stored() == {"X-Api-Key": "key-OLD-77", "X-Plant": "Delft"}
    dropped = {**shown["signals"][0], "headers": {"X-Plant": "Delft"}}  # leaving it out removes it
    assert (await api.patch(url, json={"signals": [dropped]})).status_code == 200
    assert stored() == {"X-Plant": "Delft"}


async def test_a_header_qhook_sets_itself_saved_earlier_is_dropped_not_blocking(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """A User-Agent saved before such headers were refused (it was never sent) made every PATCH a
    422, even {"active": false}."""
    set_id = await make_set(api)
    made = await make_workflow(api, set_id, signals=[{"type": "webhook", "url": RECEIVER}])
    signal_id = made["signals"][0]["id"]
    with ctx.db.transaction() as tx:
        config = tx.execute(select(signals.c.config).where(signals.c.id == signal_id)).scalar_one()
        headers = {"User-Agent": "ERP-bridge", "X-Plant": "Delft"}
        tx.execute(
            update(signals).where(signals.c.id == signal_id).values(config={**config, "headers": headers})
        )
        definitions.changed(tx)
    url = f"/api/v1/workflows/{made['id']}"
    # A save of the whole document (a bare {"active": false} is stored without validation).
    assert (await api.patch(url, json={"active": False, "name": "renamed"})).status_code == 200
    assert (await api.get(url)).json()["signals"][0]["headers"] == {"X-Plant": "Delft"}


async def test_a_filter_that_can_never_be_met_is_flagged_in_the_preview(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """'status_ eq released and eq blocked' was saved without a word, and the workflow never fired."""
    set_id = await make_set(api)
    workflow = await make_workflow(
        api,
        set_id,
        filter={
            "all": [
                {"field": "status_", "op": "eq", "value": "released"},
                {"field": "status_", "op": "eq", "value": "blocked"},
            ]
        },
    )
    result_id = await add_result(api, set_id, batchnumber_="B-1", status_="released")
    preview = (
        await api.post(
            f"/api/v1/workflows/{workflow['id']}/preview", json={"result_id": result_id, "action": "new"}
        )
    ).json()
    assert preview["would_fire"] is False
    why = "status_: eq 'released' and eq 'blocked' cannot both hold"
    assert f"the filter can never be met ({why}): the workflow never fires" in preview["warnings"]
