"""The AlisQI-compatible API over the ASGI app, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from qhook.context import AppContext
from qhook.services import sets as set_service
from qhook.services import users
from qhook.settings import Settings
from qhook.store import events as event_store
from tests.conftest import auth

BATCH_FIELDS = [
    {"name": "batchnumber_", "label": "Batch number", "type": "text", "required": True},
    {"name": "status_", "type": "list", "options": ["draft", "released", "blocked"]},
    {"name": "ph_", "type": "number"},
    {"name": "count_", "type": "integer"},
    {"name": "expiry_", "type": "datetime"},
]


def make_set(ctx: AppContext, name: str = "Batch release", fields: list[dict[str, Any]] | None = None) -> int:
    created = set_service.create_set(ctx.db, name=name, fields=fields or BATCH_FIELDS, actor="tests")
    return created.id


async def store(
    client: httpx.AsyncClient, key: str, set_id: int, results: Any, **extra: str
) -> httpx.Response:
    data = {"setId": str(set_id), "results": json.dumps(results), **extra}
    return await client.post("/api/storeResults", data=data, headers=auth(key))


async def seed(client: httpx.AsyncClient, key: str, set_id: int) -> list[int]:
    response = await store(
        client,
        key,
        set_id,
        [
            {"batchnumber_": "B-1", "status_": "draft", "ph_": 7.1, "date": "2025-10-01 08:00:00"},
            {"batchnumber_": "B-2", "status_": "released", "ph_": "6.5", "date": "2025-10-02 09:30:00"},
            {"batchnumber_": "B-3", "status_": 2, "ph_": "<321", "date": "2025-10-03 10:00:00"},
            {"batchnumber_": "B-4", "date": "2025-10-04 11:00:00", "count_": 4},
        ],
    )
    assert response.status_code == 200, response.text
    return [entry["@id"] for entry in response.json()["results"]]


async def get_results(client: httpx.AsyncClient, key: str, **params: str) -> httpx.Response:
    return await client.get("/api/getResults", params=params, headers=auth(key))


# --- getAllSets, getSetDefinition -------------------------------------------------------------------


async def test_get_all_sets_with_group_and_name_filters(
    client: httpx.AsyncClient, ctx: AppContext, viewer_key: str
) -> None:
    first = make_set(ctx, "Batch release")
    second = make_set(ctx, "Suppliers", [{"name": "name_", "type": "text"}])
    response = await client.get("/api/getAllSets", headers=auth(viewer_key))
    assert response.status_code == 200
    summary = {"groupId": 1, "groupName": "Default", "topLevelMenu": "Quality"}
    assert response.json() == [
        {"id": first, "name": "Batch release", **summary},
        {"id": second, "name": "Suppliers", **summary},
    ]
    named = await client.get("/api/getAllSets", params={"names": "suppliers"}, headers=auth(viewer_key))
    assert [s["id"] for s in named.json()] == [second]
    by_group = await client.get("/api/getAllSets", params={"groups": "Default"}, headers=auth(viewer_key))
    assert len(by_group.json()) == 2
    other_group = await client.get("/api/getAllSets", params={"groups": "7"}, headers=auth(viewer_key))
    assert other_group.json() == []
    # AlisQI's clients list master data with groups=Selection lists, whatever group the list is in.
    products = set_service.create_set(
        ctx.db,
        name="Products",
        fields=[{"name": "code_", "type": "text"}],
        kind="selection_list",
        actor="tests",
    ).id
    lists = await client.get(
        "/api/getAllSets", params={"groups": "Selection lists"}, headers=auth(viewer_key)
    )
    assert [s["id"] for s in lists.json()] == [products]
    both = await client.get(
        "/api/getAllSets", params={"groups": '["selection LISTS", "7"]'}, headers=auth(viewer_key)
    )
    assert [s["id"] for s in both.json()] == [products]


async def test_get_all_sets_hides_sets_of_others(
    client: httpx.AsyncClient, ctx: AppContext, make_key
) -> None:  # type: ignore[no-untyped-def]
    make_set(ctx, "Batch release")
    mine = make_set(ctx, "Mine", [{"name": "x_", "type": "text"}])
    key = make_key("viewer", "limited", [mine])
    response = await client.get("/api/getAllSets", headers=auth(key))
    assert [s["id"] for s in response.json()] == [mine]


async def test_set_definition_lists_fields_and_options(
    client: httpx.AsyncClient, ctx: AppContext, viewer_key: str
) -> None:
    set_id = make_set(ctx)
    set_service.update_set(ctx, set_id, fields=[{"name": "count_", "active": False}], actor="tests")
    response = await client.get("/api/getSetDefinition", params={"setId": set_id}, headers=auth(viewer_key))
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == set_id and body["name"] == "Batch release" and body["kind"] == "analysis_set"
    names = [f["name"] for f in body["fields"]]
    assert names == ["batchnumber_", "status_", "ph_", "expiry_"]
    status = body["fields"][1]
    assert status["type"] == "list" and status["label"] == "status_"
    assert status["options"] == [
        {"id": 1, "label": "draft", "active": True},
        {"id": 2, "label": "released", "active": True},
        {"id": 3, "label": "blocked", "active": True},
    ]
    assert body["fields"][0]["required"] is True and "options" not in body["fields"][0]
    everything = await client.get(
        "/api/getSetDefinition",
        params={"setId": set_id, "onlyActiveFields": "false"},
        headers=auth(viewer_key),
    )
    inactive = [f for f in everything.json()["fields"] if not f["active"]]
    assert [f["name"] for f in inactive] == ["count_"]


# --- tokens and parameters ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["access_token", "accessToken", "authToken", "authtoken"])
async def test_token_in_query_or_form_body(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str, name: str
) -> None:
    set_id = make_set(ctx)
    in_query = await client.get("/api/getSetDefinition", params={"setId": set_id, name: editor_key})
    assert in_query.status_code == 200, in_query.text
    in_form = await client.post("/api/getSetDefinition", data={"setId": str(set_id), name: editor_key})
    assert in_form.status_code == 200, in_form.text
    stored = await client.post(
        "/api/storeResults",
        data={name: editor_key, "setId": str(set_id), "results": json.dumps({"batchnumber_": "B-9"})},
    )
    assert stored.status_code == 200, stored.text


async def test_multipart_and_json_bodies(client: httpx.AsyncClient, ctx: AppContext, editor_key: str) -> None:
    set_id = make_set(ctx)
    multipart = await client.post(
        "/api/storeResults",
        files={
            "setId": (None, str(set_id)),
            "accessToken": (None, editor_key),
            "results": (None, json.dumps([{"batchnumber_": "M-1"}, {"batchnumber_": "M-2"}])),
        },
    )
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["created"] == 2
    as_file = await client.post(
        "/api/storeResults",
        data={"setId": str(set_id)},
        files={"results": ("results.json", json.dumps({"batchnumber_": "F-1"}), "application/json")},
        headers=auth(editor_key),
    )
    assert as_file.status_code == 200, as_file.text
    as_json = await client.post(
        "/api/storeResults",
        json={"setId": set_id, "results": [{"batchnumber_": "J-1"}]},
        headers=auth(editor_key),
    )
    assert as_json.status_code == 200, as_json.text
    listed = await client.post(
        "/api/getResults", data={"setId": str(set_id), "sort": "batchnumber_:asc", "authToken": editor_key}
    )
    assert [r["batchnumber_"] for r in listed.json()] == ["F-1", "J-1", "M-1", "M-2"]


async def test_form_bodies_are_read_in_their_declared_charset(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    """A PHP client posting ISO-8859-1 had "Größe" stored as "Gr\ufffd\ufffde" and a 200."""
    set_id = make_set(ctx)
    results = json.dumps([{"batchnumber_": "Größe-1"}])
    latin = urlencode({"setId": str(set_id), "results": results}, encoding="iso-8859-1").encode()
    stored = await client.post(
        "/api/storeResults",
        content=latin,
        headers={**auth(editor_key), "content-type": "application/x-www-form-urlencoded; charset=ISO-8859-1"},
    )
    assert stored.status_code == 200, stored.text
    raw = b"setId=%d&results=" % set_id + json.dumps([{"batchnumber_": "Grü-2"}], ensure_ascii=False).encode(
        "latin-1"
    )  # raw bytes, not escapes
    stored = await client.post(
        "/api/storeResults",
        content=raw,
        headers={**auth(editor_key), "content-type": "application/x-www-form-urlencoded; charset=latin-1"},
    )
    assert stored.status_code == 200, stored.text
    as_file = await client.post(
        "/api/storeResults",
        data={"setId": str(set_id)},
        files={
            "results": (
                "r.json",
                json.dumps([{"batchnumber_": "Maß-3"}], ensure_ascii=False).encode("cp1252"),
                "application/json; charset=windows-1252",
            )
        },
        headers=auth(editor_key),
    )
    assert as_file.status_code == 200, as_file.text
    listed = await client.get(
        "/api/getResults", params={"setId": str(set_id), "sort": "@id:asc"}, headers=auth(editor_key)
    )
    assert [r["batchnumber_"] for r in listed.json()] == ["Größe-1", "Grü-2", "Maß-3"]

    # Text that is not in the charset it claims is refused, naming where, and nothing is stored.
    refusals = [
        (
            b"setId=%d&results=%%5B%%7B%%22batchnumber_%%22%%3A%%22Gr%%F6%%DFe%%22%%7D%%5D" % set_id,
            "",
            "body",
        ),
        (b"setId=%d&results=[]" % set_id, "; charset=klingon", "Content-Type"),
        # Codecs that are no text encodings were a 500 before the key was looked at.
        (b"setId=%d&results=[]" % set_id, "; charset=base64", "Content-Type"),
        (b"setId=%d&results=[]" % set_id, "; charset=undefined", "Content-Type"),
    ]
    for body, charset, name in refusals:
        answer = await client.post(
            "/api/storeResults",
            content=body,
            headers={**auth(editor_key), "content-type": "application/x-www-form-urlencoded" + charset},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith(f"Invalid parameter: {name}. Expected"), answer.text
    part = await client.post(
        "/api/storeResults",
        data={"setId": str(set_id)},
        files={"results": ("r.json", b"W10=", "application/json; charset=base64")},
        headers=auth(editor_key),
    )
    assert part.status_code == 400, part.text
    assert part.json()["error"].startswith("Invalid parameter: Content-Type. Expected a known text charset")
    query = await client.get(
        f"/api/getResults?setId={set_id}&filter=%7B%22batchnumber_%22%3A%22Gr%F6%DFe%22%7D",
        headers=auth(editor_key),
    )
    assert query.status_code == 400
    assert query.json()["error"] == "Invalid parameter: query string. Expected UTF-8 text, percent-encoded."
    listed = await client.get("/api/getResults", params={"setId": str(set_id)}, headers=auth(editor_key))
    assert len(listed.json()) == 3


async def test_missing_bad_and_revoked_tokens_are_401(client: httpx.AsyncClient, ctx: AppContext) -> None:
    response = await client.get("/api/getAllSets")
    assert response.status_code == 401
    assert "access_token" in response.json()["error"]
    response = await client.get("/api/getAllSets", params={"access_token": "qhk_nope"})
    assert response.status_code == 401
    assert response.json() == {"error": "Invalid or revoked API key"}


# --- getResults ---------------------------------------------------------------------------------


async def test_get_results_flat_shape_and_default_sort(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = make_set(ctx)
    ids = await seed(client, editor_key, set_id)
    response = await get_results(client, editor_key, setId=str(set_id))
    assert response.status_code == 200
    rows = response.json()
    assert [r["batchnumber_"] for r in rows] == ["B-4", "B-3", "B-2", "B-1"]  # date:desc
    assert rows[-1] == {
        "date": "2025-10-01 08:00:00",
        "batchnumber_": "B-1",
        "status_": "draft",
        "ph_": 7.1,
        "count_": None,
        "expiry_": None,
    }
    assert rows[1]["ph_"] == "<321" and rows[1]["status_"] == "released"
    with_ids = await get_results(
        client, editor_key, setId=str(set_id), includeId="true", includeLastModificationDate="true"
    )
    first = with_ids.json()[0]
    assert first["@id"] == ids[3]
    assert len(first["lastModificationDate"]) == 19 and first["lastModificationDate"][10] == " "


async def test_equal_dates_sort_by_id_in_the_direction_asked_whatever_wrote_them(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    """Newest first put the first of a same-second batch first; and on SQLite the batch insert
    wrote a whole second without its microseconds where every other write kept them, so equal
    dates compared unequal as text: an edited result (or one made through the native API) moved
    behind its equals."""
    set_id = make_set(ctx)
    same = "2025-01-01 00:00:00"
    batch = [{"batchnumber_": name, "date": same} for name in ("first", "second", "third")]
    assert (await store(client, editor_key, set_id, batch)).status_code == 200
    native = await client.post(
        f"/api/v1/sets/{set_id}/results",
        json={"values": {"batchnumber_": "native"}, "date": "2025-01-01T00:00:00Z"},
        headers=auth(editor_key),
    )
    assert native.status_code == 201, native.text
    edited = await store(
        client, editor_key, set_id, [{"batchnumber_": "first", "ph_": 7}], keyField="batchnumber_"
    )
    assert edited.status_code == 200, edited.text

    async def order(**params: str) -> list[str]:
        response = await get_results(client, editor_key, setId=str(set_id), **params)
        assert response.status_code == 200, response.text
        return [r["batchnumber_"] for r in response.json()]

    assert await order() == ["native", "third", "second", "first"]
    assert await order(sort="date:desc") == ["native", "third", "second", "first"]
    assert await order(sort="date:asc") == ["first", "second", "third", "native"]
    assert await order(limit="1") == ["native"]


async def test_get_results_sort_offset_limit_fields(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = make_set(ctx)
    ids = await seed(client, editor_key, set_id)
    oldest_first = await get_results(
        client, editor_key, setId=str(set_id), sort="date:asc", limit="2", offset="1"
    )
    assert [r["batchnumber_"] for r in oldest_first.json()] == ["B-2", "B-3"]
    by_id = await get_results(client, editor_key, setId=str(set_id), sort="@id:desc", includeId="true")
    assert [r["@id"] for r in by_id.json()] == sorted(ids, reverse=True)
    by_name = await get_results(client, editor_key, setId=str(set_id), sort="batchnumber_:desc", limit="1")
    assert [r["batchnumber_"] for r in by_name.json()] == ["B-4"]
    only = await get_results(client, editor_key, setId=str(set_id), fields="status_,batchnumber_", limit="1")
    assert only.json() == [{"date": "2025-10-04 11:00:00", "batchnumber_": "B-4", "status_": None}]


async def test_sort_by_a_number_field_is_the_same_on_both_databases(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    """PostgreSQL put "<0.5" before every number and empty values last; SQLite the other way
    round. Now both: no value, numbers in numeric order, then qualified numbers as text."""
    set_id = make_set(ctx)
    values: list[object] = [100, "<0.5", None, -1, 10, ">1000", 2, 9.5, None]
    stored = await store(
        client, editor_key, set_id, [{"batchnumber_": f"B-{n}", "ph_": v} for n, v in enumerate(values)]
    )
    assert stored.status_code == 200, stored.text

    async def order(direction: str) -> list[object]:
        listed = await get_results(
            client, editor_key, setId=str(set_id), sort=f"ph_:{direction}", fields="batchnumber_,ph_"
        )
        return [(r["batchnumber_"], r["ph_"]) for r in listed.json()]

    ascending = await order("asc")
    assert ascending == [
        ("B-2", None),
        ("B-8", None),  # equal values: in id order, in the direction of the last key
        ("B-3", -1.0),
        ("B-6", 2.0),
        ("B-7", 9.5),
        ("B-4", 10.0),
        ("B-0", 100.0),
        ("B-1", "<0.5"),
        ("B-5", ">1000"),
    ]
    assert await order("desc") == ascending[::-1]


async def test_get_results_filter_forms(client: httpx.AsyncClient, ctx: AppContext, editor_key: str) -> None:
    set_id = make_set(ctx)
    await seed(client, editor_key, set_id)
    forms = [
        {"status_": [{"value": 2}]},
        {"status_": [{"value": "released"}]},
        {"status_": "released"},
        {"status_": 2},
    ]
    for form in forms:
        response = await get_results(
            client, editor_key, setId=str(set_id), filter=json.dumps(form), sort="date:asc"
        )
        assert response.status_code == 200, (form, response.text)
        assert [r["batchnumber_"] for r in response.json()] == ["B-2", "B-3"], form
    either = await get_results(
        client,
        editor_key,
        setId=str(set_id),
        sort="date:asc",
        filter=json.dumps({"status_": [{"value": "draft"}, {"value": 2}], "ph_": 6.5}),
    )
    assert [r["batchnumber_"] for r in either.json()] == ["B-2"]
    empty = await get_results(client, editor_key, setId=str(set_id), filter=json.dumps({"status_": None}))
    assert [r["batchnumber_"] for r in empty.json()] == ["B-4"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"sort": "batchnr:asc"}, "Invalid parameter: sort field 'batchnr'. No such field in set."),
        ({"filter": '{"batchnr": "x"}'}, "Invalid parameter: filter field 'batchnr'. No such field in set."),
        ({"fields": "batchnr"}, "Invalid parameter: fields field 'batchnr'. No such field in set."),
        ({"filter": "not json"}, "Invalid parameter: filter. Expected a JSON object"),
        ({"limit": "10001"}, "Invalid parameter: limit. Expected a number between 1 and 10000, got 10001."),
        ({"limit": "0"}, "Invalid parameter: limit."),
        ({"offset": "-1"}, "Invalid parameter: offset."),
        ({"includeId": "perhaps"}, "Invalid parameter: includeId."),
        (
            {"filter": '{"status_": "unknown"}'},
            "Invalid parameter: filter value 'unknown' for field 'status_'. No such option.",
        ),
    ],
)
async def test_get_results_bad_parameters_are_400(
    client: httpx.AsyncClient, ctx: AppContext, viewer_key: str, params: dict[str, str], error: str
) -> None:
    set_id = make_set(ctx)
    response = await get_results(client, viewer_key, setId=str(set_id), **params)
    assert response.status_code == 400
    assert list(response.json()) == ["error"]
    assert response.json()["error"].startswith(error)


async def test_limit_of_ten_thousand_is_accepted(
    client: httpx.AsyncClient, ctx: AppContext, viewer_key: str
) -> None:
    set_id = make_set(ctx)
    response = await get_results(client, viewer_key, setId=str(set_id), limit="10000")
    assert response.status_code == 200 and response.json() == []


async def test_missing_set_and_permissions(
    client: httpx.AsyncClient, ctx: AppContext, viewer_key: str, make_key
) -> None:  # type: ignore[no-untyped-def]
    set_id = make_set(ctx)
    other = make_set(ctx, "Other", [{"name": "x_", "type": "text"}])
    missing = await get_results(client, viewer_key, setId="9999")
    assert missing.status_code == 404
    assert list(missing.json()) == ["error"]
    no_set_id = await get_results(client, viewer_key)
    assert no_set_id.status_code == 400
    assert no_set_id.json() == {"error": "Missing parameter: setId"}
    limited = make_key("editor", "limited", [other])
    for path in ("/api/getResults", "/api/getSetDefinition"):
        response = await client.get(path, params={"setId": set_id}, headers=auth(limited))
        assert response.status_code == 403
        assert response.json() == {"error": "No read permission for this set"}
    refused = await store(client, limited, set_id, {"batchnumber_": "B-1"})
    assert refused.status_code == 403
    viewer_store = await store(client, viewer_key, set_id, {"batchnumber_": "B-1"})
    assert viewer_store.status_code == 403
    assert viewer_store.json() == {"error": "No write permission for this set"}
    unknown_operation = await client.get("/api/getSomething", headers=auth(viewer_key))
    assert unknown_operation.status_code == 404


# --- storeResults ---------------------------------------------------------------------------------


async def test_store_results_shape_and_events(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = make_set(ctx)
    response = await store(
        client,
        editor_key,
        set_id,
        [{"batchnumber_": "B-1", "status_": "draft"}, {"batchnumber_": "B-2", "date": "2025-10-02 13:37:00"}],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["created"] == 2 and body["updated"] == 0
    assert [entry["action"] for entry in body["results"]] == ["created", "created"]
    first, second = (entry["@id"] for entry in body["results"])
    with ctx.db.reading() as tx:
        events = event_store.list_events(tx, set_id=set_id)
    assert {(e.result_id, e.action, e.actor) for e in events} == {
        (first, "new", "erin"),
        (second, "new", "erin"),
    }
    rows = (await get_results(client, editor_key, setId=str(set_id), includeId="true")).json()
    assert {r["@id"]: r["date"] for r in rows}[second] == "2025-10-02 13:37:00"
    # one object instead of an array, and an update by @id
    update = await store(client, editor_key, set_id, {"@id": first, "status_": "released"})
    assert update.json() == {"results": [{"@id": first, "action": "updated"}], "created": 0, "updated": 1}


async def test_store_results_is_all_or_nothing(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = make_set(ctx)
    response = await store(
        client,
        editor_key,
        set_id,
        [
            {"batchnumber_": "B-1", "ph_": 7},
            {"batchnumber_": "B-2", "ph_": "acid"},
            {"batchnumber_": "B-3"},
            {"status_": "draft"},
        ],
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("2 of 4 result(s) could not be stored, so none was stored")
    assert [e["index"] for e in body["errors"]] == [1, 3]
    assert "ph_" in body["errors"][0]["error"] and "batchnumber_" in body["errors"][1]["error"]
    assert (await get_results(client, editor_key, setId=str(set_id))).json() == []
    with ctx.db.reading() as tx:
        assert event_store.list_events(tx, set_id=set_id) == []


async def test_store_results_names_every_problem_of_a_result(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    """The fourth and later problems of one result came back only after the first three were
    fixed: a round trip each, under a 30/minute budget."""
    set_id = make_set(ctx)
    bad = {"batchnumber_": "B-9", "ph_": "abc", "count_": "1.5", "status_": "nope", "expiry_": "noon"}
    response = await store(client, editor_key, set_id, [{"batchnumber_": "ok"}, bad])
    assert response.status_code == 400, response.text
    [entry] = response.json()["errors"]
    assert entry["index"] == 1 and entry["error"].startswith("Invalid input: values.")
    for name in ("ph_", "count_", "status_", "expiry_"):
        assert f"values.{name}:" in entry["error"], (name, entry["error"])
    assert (await get_results(client, editor_key, setId=str(set_id))).json() == []


async def test_store_results_bad_parameters(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = make_set(ctx)
    missing = await client.post("/api/storeResults", data={"setId": str(set_id)}, headers=auth(editor_key))
    assert missing.json() == {"error": "Missing parameter: results"}
    bad_json = await client.post(
        "/api/storeResults", data={"setId": str(set_id), "results": "[{"}, headers=auth(editor_key)
    )
    assert bad_json.status_code == 400 and bad_json.json()["error"].startswith("Invalid parameter: results.")
    bad_key = await store(client, editor_key, set_id, {"batchnumber_": "B-1"}, keyField="batchnr")
    assert bad_key.status_code == 400
    assert bad_key.json() == {"error": "Invalid parameter: keyField field 'batchnr'. No such field in set."}
    unknown_set = await store(client, editor_key, 9999, {"batchnumber_": "B-1"})
    assert unknown_set.status_code == 404
    get_is_refused = await client.get("/api/storeResults", headers=auth(editor_key))
    assert get_is_refused.status_code == 405


async def test_key_field_updates_merges_and_clears(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = make_set(ctx)
    ids = await seed(client, editor_key, set_id)
    response = await store(
        client,
        editor_key,
        set_id,
        [
            {"batchnumber_": "B-1", "status_": "blocked", "ph_": None},
            {"batchnumber_": "B-9", "status_": "draft"},
        ],
        keyField="batchnumber_",
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0] == {"@id": ids[0], "action": "updated"}
    assert results[1]["action"] == "created" and results[1]["@id"] not in ids
    rows = (
        await get_results(
            client, editor_key, setId=str(set_id), filter='{"batchnumber_": "B-1"}', includeId="true"
        )
    ).json()
    assert rows == [
        {
            "@id": ids[0],
            "date": "2025-10-01 08:00:00",
            "batchnumber_": "B-1",
            "status_": "blocked",
            "ph_": None,
            "count_": None,
            "expiry_": None,
        }
    ]
    with ctx.db.reading() as tx:
        modified = [e for e in event_store.list_events(tx, result_id=ids[0]) if e.action == "modified"]
    assert modified[0].changes == {
        "status_": {"old": "draft", "new": "blocked"},
        "ph_": {"old": 7.1, "new": None},
    }


async def test_edit_only_reports_each_unmatched_key(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = make_set(ctx)
    await seed(client, editor_key, set_id)
    response = await store(
        client,
        editor_key,
        set_id,
        [{"batchnumber_": "B-1", "ph_": 1}, {"batchnumber_": "X-1"}, {"batchnumber_": "X-2"}],
        keyField="batchnumber_",
        editOnly="true",
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [e["index"] for e in errors] == [1, 2]
    assert "X-1" in errors[0]["error"] and "X-2" in errors[1]["error"]
    rows = (await get_results(client, editor_key, setId=str(set_id), filter='{"batchnumber_": "B-1"}')).json()
    assert rows[0]["ph_"] == 7.1  # the good one was not stored either
    no_key = await store(client, editor_key, set_id, {"batchnumber_": "B-1"}, editOnly="true")
    assert no_key.status_code == 400
    assert "editOnly" in no_key.json()["errors"][0]["error"]
    edited = await store(
        client,
        editor_key,
        set_id,
        {"batchnumber_": "B-1", "ph_": 1},
        keyField="batchnumber_",
        editOnly="true",
    )
    assert edited.json()["updated"] == 1


async def test_add_list_options(client: httpx.AsyncClient, ctx: AppContext, editor_key: str) -> None:
    set_id = make_set(ctx)
    refused = await store(client, editor_key, set_id, {"batchnumber_": "B-1", "status_": "quarantine"})
    assert refused.status_code == 400
    assert "status_" in refused.json()["errors"][0]["error"]
    accepted = await store(
        client,
        editor_key,
        set_id,
        [{"batchnumber_": "B-1", "status_": "quarantine"}, {"batchnumber_": "B-2", "status_": "Quarantine"}],
        addListOptions="true",
    )
    assert accepted.status_code == 200, accepted.text
    definition = (
        await client.get("/api/getSetDefinition", params={"setId": set_id}, headers=auth(editor_key))
    ).json()
    options = definition["fields"][1]["options"]
    assert options[-1] == {"id": 4, "label": "quarantine", "active": True}
    assert len(options) == 4
    rows = (
        await get_results(client, editor_key, setId=str(set_id), filter='{"status_": [{"value": 4}]}')
    ).json()
    assert sorted(r["batchnumber_"] for r in rows) == ["B-1", "B-2"]


async def test_rate_limit_is_shared_by_both_apis(client: httpx.AsyncClient, ctx: AppContext) -> None:
    ctx.settings = Settings(**{**ctx.settings.model_dump(), "api_rate_limit": "30/minute"})
    users.create_user(ctx.db, "rita", "viewer")
    key = users.create_api_key(ctx.db, "rita")[1]
    for number in range(1, 31):
        if number % 2:
            response = await client.get("/api/getAllSets", params={"access_token": key})
        else:
            response = await client.get("/api/v1/me", headers=auth(key))
        assert response.status_code == 200, (number, response.text)
        assert response.headers["X-RateLimit-Limit"] == "30"
        assert response.headers["X-RateLimit-Remaining"] == str(30 - number)
    refused = await client.get("/api/getAllSets", headers=auth(key))
    assert refused.status_code == 429
    assert list(refused.json()) == ["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert (await client.get("/api/v1/me", headers=auth(key))).status_code == 429


async def test_numbers_beyond_what_is_stored_and_odd_digits_are_400_and_nothing_is_stored(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    """A whole number past 64 bits given as text (or 1e30) was a plain-text 500, and one between
    2**63 and 2**64 was stored, failing every later filter on it; "1_5" was stored as 15."""
    set_id = make_set(ctx)
    for value, expected in (
        ("99999999999999999999", "a whole number from -9223372036854775808"),
        ("1e19", "a whole number from -9223372036854775808"),
        (1e30, "a whole number from -9223372036854775808"),
        ("1_5", "digits 0-9"),
    ):
        rows = [{"batchnumber_": "B-ok", "count_": 1}, {"batchnumber_": "B-big", "count_": value}]
        response = await store(client, editor_key, set_id, rows)
        assert response.status_code == 400, (value, response.text)
        assert "results[1]" in response.json()["error"] and "count_" in response.json()["error"]
        assert expected in response.json()["error"]
        assert response.headers["X-RateLimit-Limit"]
    response = await store(client, editor_key, set_id, [{"batchnumber_": "B-ph", "ph_": "1_5"}])
    assert response.status_code == 400 and "ph_" in response.json()["error"]
    listed = await get_results(client, editor_key, setId=str(set_id))
    assert listed.json() == []


async def test_a_json_body_null_is_not_given_and_its_bytes_must_be_utf8(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    set_id = make_set(ctx)
    body = {"setId": set_id, "keyField": None, "limit": None, "results": [{"batchnumber_": "B-1"}]}
    response = await client.post("/api/storeResults", json=body, headers=auth(editor_key))
    assert response.status_code == 200, response.text
    latin = json.dumps(
        {"setId": set_id, "results": [{"batchnumber_": "Müller"}]}, ensure_ascii=False
    ).encode()
    latin = latin.replace("Müller".encode(), "Müller".encode("latin-1"))
    response = await client.post(
        "/api/storeResults",
        content=latin,
        headers={**auth(editor_key), "Content-Type": "application/json; charset=ISO-8859-1"},
    )
    assert response.status_code == 400
    assert "Expected JSON in UTF-8" in response.json()["error"] and "0xfc" in response.json()["error"]


async def test_rows_read_can_be_written_back_and_fields_can_ask_for_the_id(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    """A row from getResults&includeLastModificationDate=true was refused by storeResults
    (lastModificationDate: no such field); an empty @id column was a 400 where an empty date is
    not given; fields=@id was accepted and returned no id."""
    set_id = make_set(ctx)
    [first, *_] = await seed(client, editor_key, set_id)
    read = await get_results(
        client, editor_key, setId=str(set_id), includeId="true", includeLastModificationDate="true"
    )
    row = next(r for r in read.json() if r["@id"] == first)
    assert "lastModificationDate" in row
    written = await store(client, editor_key, set_id, [{**row, "ph_": 7.4}])
    assert written.status_code == 200, written.text
    assert written.json()["results"] == [{"@id": first, "action": "updated"}]
    fresh = await store(client, editor_key, set_id, [{"@id": "", "batchnumber_": "B-9", "date": ""}])
    assert fresh.status_code == 200 and fresh.json()["created"] == 1, fresh.text
    only_id = await get_results(client, editor_key, setId=str(set_id), fields="@id,batchnumber_")
    assert all(set(r) == {"@id", "date", "batchnumber_"} for r in only_id.json()), only_id.json()


async def test_a_row_with_a_deactivated_option_can_be_written_back_unchanged(
    client: httpx.AsyncClient, ctx: AppContext, editor_key: str
) -> None:
    """A row read and written back with only ph_ changed was refused: its status_ named an option
    deactivated since ("'blocked' is deactivated"). Choosing that option anew is still refused."""
    set_id = make_set(ctx)
    stored = await store(
        client,
        editor_key,
        set_id,
        [{"batchnumber_": "B-1", "status_": "blocked"}, {"batchnumber_": "B-2", "status_": "draft"}],
    )
    first, second = (entry["@id"] for entry in stored.json()["results"])
    set_service.update_set(
        ctx,
        set_id,
        fields=[{"name": "status_", "options": [{"label": "blocked", "active": False}]}],
        actor="t",
    )
    rows = (await get_results(client, editor_key, setId=str(set_id), includeId="true")).json()
    row = next(r for r in rows if r["@id"] == first)
    assert row["status_"] == "blocked"
    written = await store(client, editor_key, set_id, [{**row, "ph_": 6.9}])
    assert written.status_code == 200, written.text
    anew = await store(client, editor_key, set_id, [{"@id": second, "status_": "blocked"}])
    assert anew.status_code == 400 and "deactivated" in anew.json()["error"]
    batch = await store(client, editor_key, set_id, [{**row, "ph_": 7.0}, {"batchnumber_": "B-3"}])
    assert batch.status_code == 200, batch.text  # the many-rows path too
