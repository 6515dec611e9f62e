"""JSON from outside with an escaped lone surrogate ("\\ud800" with no partner) is refused where it
is read, with a 4xx naming the place, and nothing is written. The standard library's parser took
it, and it failed later: PostgreSQL refused the jsonb, orjson refused to render the webhook body
(a 500 either way). Malformed JSON bodies name the body and the problem.

A NUL character anywhere from outside (JSON, query, path, form fields, files, the login form) is
refused the same way on both databases: PostgreSQL cannot store one (a 500), SQLite stored it."""

from __future__ import annotations

import json

import httpx
from fastapi.routing import APIRoute
from sqlalchemy import Table, func, select

from qhook.api.app import create_app
from qhook.api.deps import JSON_NUMBER_EXPECTED
from qhook.api.json_body import JsonBodyRoute
from qhook.context import AppContext
from qhook.domain.json_text import FINITE_EXPECTED, TWICE_EXPECTED
from qhook.store.tables import results, sets, workflows
from tests.support.workflows import RECEIVER, make_set

FIELDS = [{"name": "batchnumber_", "type": "text"}]
JSON = {"content-type": "application/json"}


def _count(ctx: AppContext, table: Table) -> int:
    with ctx.db.reading() as tx:
        return int(tx.execute(select(func.count()).select_from(table)).scalar_one())


async def test_a_lone_surrogate_in_a_body_is_a_422_naming_the_body(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api, "lots", FIELDS)
    response = await api.post(
        f"/api/v1/sets/{set_id}/results", content=b'{"values": {"batchnumber_": "L-\\ud800"}}', headers=JSON
    )
    assert response.status_code == 422
    detail = response.json()["details"][0]
    assert detail["field"] == "body"
    assert "hex escape" in detail["error"] and detail["error"].startswith("valid JSON expected")
    assert _count(ctx, results) == 0

    named = await api.post("/api/v1/sets", content=b'{"name": "x\\udc00", "fields": []}', headers=JSON)
    assert named.status_code == 422 and "hex escape" in named.json()["error"]
    assert _count(ctx, sets) == 1

    # A surrogate pair is one character and is stored as it came.
    pair = await api.post(
        f"/api/v1/sets/{set_id}/results",
        content=b'{"values": {"batchnumber_": "L-\\ud83d\\ude00"}}',
        headers=JSON,
    )
    assert pair.status_code == 201, pair.text
    assert pair.json()["values"]["batchnumber_"] == "L-\U0001f600"


async def test_malformed_json_names_the_body_the_problem_and_where(api: httpx.AsyncClient) -> None:
    response = await api.post("/api/v1/sets", content=b'{"name": "x",}', headers=JSON)
    assert response.status_code == 422
    detail = response.json()["details"][0]
    assert detail["field"] == "body"
    assert detail["error"].startswith("valid JSON expected: ") and detail["error"].endswith("at character 13")


async def test_a_lone_surrogate_in_a_parameter_is_refused_by_name(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api, "lots", FIELDS)
    stored = await api.post(
        "/api/storeResults",
        data={"setId": str(set_id), "results": json.dumps([{"batchnumber_": "L-\ud800"}])},
    )
    assert stored.status_code == 400
    assert stored.json()["error"].startswith("Invalid parameter: results.")
    as_json = await api.post(
        "/api/storeResults", content=b'{"setId": 1, "results": "[{\\"a\\": \\"\\ud800\\"}]"}', headers=JSON
    )
    assert as_json.status_code == 400 and as_json.json()["error"].startswith("Invalid parameter: body.")
    filtered = await api.get(
        f"/api/v1/sets/{set_id}/results", params={"filter": '{"batchnumber_": "\\ud800"}'}
    )
    assert filtered.status_code == 422 and filtered.json()["details"][0]["field"] == "filter"
    assert _count(ctx, results) == 0


async def test_a_template_rendering_a_lone_surrogate_is_refused_when_saved(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api, "lots", FIELDS)
    signal = {
        "type": "webhook",
        "url": RECEIVER,
        "payload": "template",
        "body_template": '{"lot": "{{ batchnumber_ }}\\ud800"}',
    }
    response = await api.post(
        "/api/v1/workflows",
        json={"name": "w", "set_id": set_id, "triggers": {"entry": True}, "signals": [signal]},
    )
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "signals[0].body_template"
    assert _count(ctx, workflows) == 0


def test_every_route_reads_json_bodies_strictly(ctx: AppContext) -> None:
    routes = [route for route in create_app(ctx).routes if isinstance(route, APIRoute)]
    assert routes
    assert [r.path for r in routes if not isinstance(r, JsonBodyRoute)] == []


NUL_EXPECTED = "text without NUL characters (\\u0000)"


async def test_a_nul_in_json_is_a_422_naming_the_field(api: httpx.AsyncClient, ctx: AppContext) -> None:
    set_id = await make_set(api, "lots", FIELDS)
    response = await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"batchnumber_": "L-\x001"}})
    assert response.status_code == 422, response.text
    assert response.json()["details"] == [{"field": "values.batchnumber_", "error": NUL_EXPECTED}]
    named = await api.post("/api/v1/sets", json={"name": "x\x00", "fields": []})
    assert named.status_code == 422 and named.json()["details"][0]["field"] == "name"
    assert (_count(ctx, results), _count(ctx, sets)) == (0, 1)
    # An escaped backslash followed by "u0000" is six ordinary characters, stored as they came.
    literal = await api.post(
        f"/api/v1/sets/{set_id}/results", content=b'{"values": {"batchnumber_": "L-\\\\u0000"}}', headers=JSON
    )
    assert literal.status_code == 201, literal.text
    assert literal.json()["values"]["batchnumber_"] == "L-\\u0000"


async def test_a_nul_in_the_query_or_the_path_is_a_422_naming_it(api: httpx.AsyncClient) -> None:
    set_id = await make_set(api, "lots", FIELDS)
    found = await api.get(f"/api/v1/sets/{set_id}/results", params={"q": "L-\x00"})
    assert found.status_code == 422 and found.json()["details"] == [{"field": "q", "error": NUL_EXPECTED}]
    listed = await api.get("/api/v1/deliveries", params={"endpoint": "https://erp\x00"})
    assert listed.status_code == 422 and listed.json()["details"][0]["field"] == "endpoint"
    paused = await api.post("/api/v1/endpoints/https%3A%2F%2Ferp%00.example.com/pause")
    assert paused.status_code == 422 and paused.json()["details"][0]["field"] == "path"
    compat = await api.get("/api/getResults", params={"setId": str(set_id), "filter": "x\x00"})
    assert compat.status_code == 400
    assert compat.json() == {"error": f"Invalid parameter: filter. Expected {NUL_EXPECTED}."}


async def test_a_nul_in_a_compat_parameter_is_refused_by_name(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    set_id = await make_set(api, "lots", FIELDS)
    form = await api.post(
        "/api/storeResults", data={"setId": str(set_id), "results": json.dumps([{"batchnumber_": "L-\x00"}])}
    )
    assert form.status_code == 400 and form.json()["error"].startswith("Invalid parameter: results.")
    uploaded = await api.post(
        "/api/storeResults",
        data={"setId": str(set_id)},
        files={"results": ("r.json", b'[{"batchnumber_": "L-\x00"}]', "application/json")},
    )
    assert uploaded.status_code == 400 and uploaded.json()["error"].startswith("Invalid parameter: results.")
    as_json = await api.post(
        "/api/storeResults", json={"setId": set_id, "results": [{"batchnumber_": "L-\x00"}]}
    )
    assert as_json.status_code == 400
    assert as_json.json()["error"] == f"Invalid parameter: results.0.batchnumber_. Expected {NUL_EXPECTED}."
    assert _count(ctx, results) == 0


INT_EXPECTED = "a whole number from -9223372036854775808 to 9223372036854775807"


async def test_an_integer_beyond_64_bits_is_refused_by_name(api: httpx.AsyncClient, ctx: AppContext) -> None:
    """orjson writing the event refused it (a 500 from storeResults and the native API alike), and a
    compat filter on it was a 500 from the driver."""
    set_id = await make_set(api, "lots", [*FIELDS, {"name": "count_", "label": "Count", "type": "integer"}])
    huge = 99999999999999999999999
    native = await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"count_": huge}})
    assert native.status_code == 422, native.text
    assert native.json()["details"] == [{"field": "values.count_", "error": INT_EXPECTED}]
    stored = await api.post(
        "/api/storeResults", data={"setId": str(set_id), "results": f'[{{"count_": {huge}}}]'}
    )
    assert stored.status_code == 400
    assert stored.json() == {"error": f"Invalid parameter: results.0.count_. Expected {INT_EXPECTED}."}
    assert "X-RateLimit-Limit" in stored.headers
    as_json = await api.post(
        "/api/storeResults",
        content=f'{{"setId": {set_id}, "results": [{{"count_": {2**63}}}]}}',
        headers=JSON,
    )
    assert as_json.status_code == 400
    assert as_json.json() == {"error": f"Invalid parameter: results.0.count_. Expected {INT_EXPECTED}."}
    filtered = await api.get(
        "/api/getResults", params={"setId": str(set_id), "filter": f'{{"count_": {2**63}}}'}
    )
    assert filtered.status_code == 400
    assert filtered.json() == {"error": f"Invalid parameter: filter field 'count_'. Expected {INT_EXPECTED}."}
    assert _count(ctx, results) == 0
    edge = await api.post(f"/api/v1/sets/{set_id}/results", json={"values": {"count_": 2**63 - 1}})
    assert edge.status_code == 201, edge.text


async def test_infinity_nan_and_overflowing_numbers_are_refused(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """1e309, Infinity and NaN were stored, shown as null, and the same document sent back was a
    422; a bin answered 'Infinity', which is no JSON."""
    set_id = await make_set(api, "lots", [*FIELDS, {"name": "assay_", "type": "number"}])
    workflows_before = _count(ctx, workflows)
    doc = (
        '{"name": "t", "set_id": %d, "triggers": {"entry": true}, '
        '"filter": {"field": "assay_", "op": "gt", "value": %s}}'
    )
    overflow = await api.post("/api/v1/workflows", content=doc % (set_id, "1e309"), headers=JSON)
    assert overflow.status_code == 422, overflow.text
    assert overflow.json()["details"] == [{"field": "filter.value", "error": FINITE_EXPECTED}]
    for literal in ("Infinity", "NaN", "-Infinity"):
        refused = await api.post("/api/v1/workflows", content=doc % (set_id, literal), headers=JSON)
        assert refused.status_code == 422, (literal, refused.text)
        assert refused.json()["details"][0]["field"] == "body"
    assert _count(ctx, workflows) == workflows_before
    compat = await api.post(
        "/api/storeResults", data={"setId": str(set_id), "results": '[{"assay_": 1e999}]'}
    )
    assert compat.status_code == 400
    assert compat.json() == {"error": f"Invalid parameter: results.0.assay_. Expected {FINITE_EXPECTED}."}
    assert _count(ctx, results) == 0


async def test_unknown_keys_and_loose_booleans_are_refused_by_name(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """A typo was ignored with a 2xx: {"secert": ...} on rotate-secret rotated to a generated
    secret, {"active": "no"} deactivated a user, {"ttl_days": 3} on a bin's PATCH did nothing."""
    from qhook.services import users

    set_id = await make_set(api, "lots", FIELDS)
    made = await api.post(
        "/api/v1/workflows",
        json={
            "name": "w",
            "set_id": set_id,
            "triggers": {"entry": True},
            "signals": [{"type": "webhook", "url": RECEIVER}],
        },
    )
    workflow = made.json()
    signal = workflow["signals"][0]
    rotate = await api.post(
        f"/api/v1/workflows/{workflow['id']}/signals/{signal['id']}/rotate-secret", json={"secert": "whsec_x"}
    )
    assert rotate.status_code == 422, rotate.text
    assert rotate.json()["details"] == [
        {"field": "secert", "error": "no such field here (/api/v1/docs lists the fields)"}
    ]
    users.create_user(ctx.db, "uma", "viewer", password="password-uma-1")
    uma = next(u for u in users.list_users(ctx.db) if u.name == "uma")
    for value in ("no", 0, "off"):
        loose = await api.patch(f"/api/v1/users/{uma.id}", json={"active": value})
        assert loose.status_code == 422, (value, loose.text)
        assert loose.json()["details"] == [{"field": "active", "error": "true or false"}]
    assert users.user_named(ctx.db, "uma").active
    for path, body in (
        (f"/api/v1/sets/{set_id}/results", {"values": {"batchnumber_": "B-1"}, "dat": "2025-01-01"}),
        ("/api/v1/sets", {"name": "x", "fields": FIELDS, "colour": "red"}),
        ("/api/v1/inspector/bins", {"ttl_day": 3}),
    ):
        refused = await api.post(path, json=body)
        assert refused.status_code == 422, (path, refused.text)
    assert _count(ctx, results) == 0 and _count(ctx, sets) == 1
    text = await api.post("/api/v1/sets", content=b"name=x", headers={"content-type": "text/plain"})
    assert text.status_code == 422
    assert text.json()["details"] == [
        {"field": "body", "error": "a JSON object, sent as Content-Type: application/json"}
    ]


async def test_a_key_given_twice_is_refused_by_name(api: httpx.AsyncClient, ctx: AppContext) -> None:
    """json.loads keeps the last of a repeated key: '"status_": "released", "status_": "rejected"'
    stored "rejected" with a 201, and neither the sender nor the Hub knew which was meant."""
    set_id = await make_set(api, "lots", [*FIELDS, {"name": "status_", "type": "text"}])
    twice = '{"values": {"batchnumber_": "L-1", "status_": "released", "status_": "rejected"}}'
    rest = await api.post(f"/api/v1/sets/{set_id}/results", content=twice, headers=JSON)
    assert rest.status_code == 422, rest.text
    assert rest.json()["details"] == [{"field": "values.status_", "error": TWICE_EXPECTED}]
    compat = await api.post(
        "/api/storeResults",
        data={"setId": str(set_id), "results": '[{"batchnumber_": "L-2", "batchnumber_": "L-3"}]'},
    )
    assert compat.status_code == 400
    expected = f"Invalid parameter: results.0.batchnumber_. Expected {TWICE_EXPECTED}."
    assert compat.json() == {"error": expected}
    assert _count(ctx, results) == 0
    nested = f'{{"name": "t", "set_id": {set_id}, "triggers": {{"entry": true, "entry": false}}}}'
    workflow = await api.post("/api/v1/workflows", content=nested, headers=JSON)
    assert workflow.status_code == 422, workflow.text
    assert workflow.json()["details"] == [{"field": "triggers.entry", "error": TWICE_EXPECTED}]


async def test_ids_and_counts_in_a_body_are_json_numbers(api: httpx.AsyncClient, ctx: AppContext) -> None:
    """ "5" was taken for an id in a replay, a run or a user's sets, and for an endpoint's
    max_in_flight, while a signal's max_in_flight or timeout_s refused it: one rule now."""
    from qhook.services import users

    set_id = await make_set(api, "lots", FIELDS)
    made = await api.post(
        "/api/v1/workflows",
        json={"name": "w", "set_id": set_id, "triggers": {"manual": True}, "signals": []},
    )
    workflow_id = made.json()["id"]
    users.create_user(ctx.db, "uma", "viewer", password="password-uma-1")
    uma = users.user_named(ctx.db, "uma")
    number = JSON_NUMBER_EXPECTED
    for method, path, body, field in (
        ("POST", "/api/v1/deliveries/replay", {"workflow_id": str(workflow_id)}, "workflow_id"),
        ("POST", f"/api/v1/workflows/{workflow_id}/run", {"result_ids": ["1"]}, "result_ids.0"),
        ("POST", f"/api/v1/workflows/{workflow_id}/preview", {"result_id": "1"}, "result_id"),
        ("PATCH", f"/api/v1/users/{uma.id}", {"set_ids": [str(set_id)]}, "set_ids.0"),
        (
            "PUT",
            "/api/v1/endpoints/https%3A%2F%2Ferp.example.com%3A443/limits",
            {"max_in_flight": "5"},
            "max_in_flight",
        ),
    ):
        refused = await api.request(method, path, json=body)
        assert refused.status_code == 422, (path, refused.text)
        assert refused.json()["details"] == [{"field": field, "error": number}], path
    assert users.user_named(ctx.db, "uma").set_ids is None
    for value in (True, "5"):
        refused = await api.post("/api/v1/deliveries/replay", json={"workflow_id": value, "dry_run": True})
        assert refused.json()["details"] == [{"field": "workflow_id", "error": number}], value
    whole = await api.post(
        "/api/v1/deliveries/replay", json={"workflow_id": float(workflow_id), "dry_run": True}
    )
    assert whole.status_code == 200, whole.text  # 5.0 is a JSON number
    not_a_number = await api.get("/api/v1/deliveries", params={"workflow_id": "abc"})
    assert not_a_number.status_code == 422
    assert not_a_number.json()["details"][0]["error"] != number  # a query is text: no JSON there
    as_text = await api.get("/api/v1/deliveries", params={"workflow_id": str(workflow_id)})
    assert as_text.status_code == 200
