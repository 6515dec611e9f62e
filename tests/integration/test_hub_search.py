"""The Hub's body search ``q``: a substring of the raw body on both databases, case-insensitive
(ASCII on SQLite), with LIKE's wildcards, quotes, backslashes and FTS-like syntax taken literally.
"""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select

from qhook.context import AppContext
from qhook.services import hub
from qhook.store.db import Tx
from qhook.store.tables import deliveries
from tests.support.hub_data import add_delivery, days_ago

BODIES = [
    '{"batchnumber_": "B-1234", "note": "100% pure"}',
    '{"batchnumber_": "b-1234", "note": "50%_off a_b"}',
    '{"note": "it\'s \\"quoted\\" here", "path": "C:\\\\temp\\\\x"}',
    '{"name": "ÄÖÜ Müller", "city": "Zürich"}',
    '{"name": "äöü müller", "city": "zürich"}',
    '{"text": "日本語のテキスト", "emoji": "🙂x🙂"}',
    '{"fts": "NEAR(a b) OR c* AND -d ^e body:f"}',
    '{"batchnumber_": "B-12345"}',
]
QUERIES = [
    "B-1234",
    "b-1234",
    "B_1234",
    "100%",
    "50%_",
    "a_b",
    "%",
    "_",
    "it's",
    '\\"quoted\\"',
    '"',
    "\\\\temp",
    "ÄÖÜ",
    "äöü",
    "MÜLLER",
    "müller",
    "Zürich",
    "日本語",
    "🙂x🙂",
    "NEAR(a b)",
    "c* AND",
    "-d ^e",
    "body:f",
    "OR",
    "ab",
    "B-",
    "12345",
]


def _reference(tx: Tx, q: str) -> list[int]:
    """The plain LIKE (SQLite) / ILIKE (PostgreSQL) scan: any faster path must answer the same."""
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    column = deliveries.c.body
    like = (
        column.ilike(pattern, escape="\\")
        if tx.dialect.name == "postgresql"
        else column.like(pattern, escape="\\")
    )
    return list(tx.execute(select(deliveries.c.id).where(like).order_by(deliveries.c.id.desc())).scalars())


def _search(ctx: AppContext, q: str, limit: int = 50) -> list[int]:
    found, _ = hub.list_deliveries(ctx, hub.Filters(q=q), limit=limit)
    return [d.id for d in found]


def test_special_characters_find_what_like_found(ctx: AppContext) -> None:
    made = [add_delivery(ctx.db, body=body) for body in BODIES]
    assert len(made) == len(BODIES)
    with ctx.db.reading() as tx:
        expected = {q: _reference(tx, q) for q in QUERIES}
    for q in QUERIES:
        assert _search(ctx, q) == expected[q], q
    # Spot checks, so the equality above cannot pass by both being empty.
    assert _search(ctx, "B-1234") == [made[7], made[1], made[0]]
    assert _search(ctx, "100%") == [made[0]]
    assert _search(ctx, "a_b") == [made[1]]
    assert _search(ctx, "it's") == [made[2]]
    assert _search(ctx, "🙂x🙂") == [made[5]]
    assert _search(ctx, "NEAR(a b)") == [made[6]]
    if ctx.db.is_sqlite:
        # SQLite's LIKE folds ASCII case only.
        assert _search(ctx, "äöü") == [made[4]]
        assert _search(ctx, "ZÜRICH") == []


async def test_q_over_the_api_pages_through_matches(api: httpx.AsyncClient, ctx: AppContext) -> None:
    wanted = [add_delivery(ctx.db, body=json.dumps({"batch": f"B-77{i:02d}", "n": i})) for i in range(7)]
    for i in range(5):
        add_delivery(ctx.db, body=json.dumps({"batch": f"C-88{i:02d}"}))
    seen: list[int] = []
    cursor = None
    while True:
        params = {"q": "b-77", "limit": "3", **({"cursor": cursor} if cursor else {})}
        response = await api.get("/api/v1/deliveries", params=params)
        assert response.status_code == 200, response.text
        seen += [item["id"] for item in response.json()["items"]]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == wanted[::-1]


def test_purged_rows_are_not_found(ctx: AppContext) -> None:
    old = [
        add_delivery(
            ctx.db, status="succeeded", body=json.dumps({"batch": f"OLD-{i}"}), created_at=days_ago(40)
        )
        for i in range(30)
    ]
    kept = add_delivery(ctx.db, status="succeeded", body=json.dumps({"batch": "OLD-kept"}))
    assert _search(ctx, "OLD-", limit=100) == [kept, *old[::-1]]
    report = hub.purge(ctx, batch=7)
    assert report.deliveries["succeeded"] == 30
    assert _search(ctx, "OLD-", limit=100) == [kept]
    # SQLite may reuse the highest id after a delete: a new body must not answer for an old one.
    with ctx.db.transaction() as tx:
        tx.execute(deliveries.delete().where(deliveries.c.id == kept))
    reused = add_delivery(ctx.db, body=json.dumps({"batch": "NEW-1"}))
    assert _search(ctx, "OLD-kept") == []
    assert _search(ctx, "NEW-1") == [reused]


async def test_a_needle_no_database_can_hold_is_a_clear_422(api: httpx.AsyncClient) -> None:
    for q, expected in (("B-\x001", "text without NUL characters"), ("x" * 201, "at most 200 characters")):
        answer = await api.get("/api/v1/deliveries", params={"q": q})
        assert answer.status_code == 422, answer.text
        assert "q" in answer.text and expected in answer.text
