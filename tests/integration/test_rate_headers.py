"""X-RateLimit-* headers on every API answer (native and compat) on SQLite and PostgreSQL, and the
per-address limit for requests without a valid key: 401s, unknown routes, 413s, compat 400s."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from qhook.api.app import create_app
from qhook.context import AppContext
from tests.conftest import auth
from tests.integration.test_web import login, person

HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Retry-After")


def client_from(ctx: AppContext, address: str = "10.1.1.1", **overrides: object) -> httpx.AsyncClient:
    """A client of an app whose settings differ from the fixture's by ``overrides``."""
    if overrides:
        ctx = dataclasses.replace(ctx, settings=ctx.settings.model_copy(update=overrides))
    transport = httpx.ASGITransport(app=create_app(ctx), client=(address, 4321))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def assert_headers(response: httpx.Response, limit: int, remaining: int) -> None:
    for name in HEADERS:
        assert name in response.headers, (response.status_code, response.url, dict(response.headers))
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == str(remaining)
    retry_after = int(response.headers["X-RateLimit-Retry-After"])
    # How long to wait before the next call: nothing while calls remain.
    assert retry_after == 0 if remaining else 1 <= retry_after <= 60


async def test_every_kind_of_refusal_counts_against_the_address(ctx: AppContext) -> None:
    async with client_from(ctx, api_rate_limit="20/minute", max_body_bytes=100) as http:
        answers = [
            await http.get("/api/v1/me"),  # 401, no key
            await http.get("/api/v1/me", headers=auth("qhk_wrong")),  # 401, bad key
            await http.get("/api/getAllSets", params={"authtoken": "qhk_wrong"}),  # compat 401
            await http.post("/api/getAllSets", data={"authtoken": "qhk_wrong"}),  # compat 401, form
            await http.get("/api/getAllSets"),  # compat 401, no key
            await http.get("/api/v1/no-such-route"),  # 404
            await http.get("/api/noSuchOperation"),  # compat 404
            await http.post("/api/v1/sets", content=b"x" * 500, headers=auth("qhk_wrong")),  # 413
            await http.post(
                "/api/storeResults", content=b"{not json", headers={"content-type": "application/json"}
            ),  # compat 400 raised before the key is looked at
        ]
    expected = [401, 401, 401, 401, 401, 404, 404, 413, 400]
    assert [a.status_code for a in answers] == expected, [a.text for a in answers]
    for number, answer in enumerate(answers, start=1):
        assert_headers(answer, 20, 20 - number)
        assert "error" in answer.json()


async def test_413_by_streamed_body_and_native_422_carry_headers(ctx: AppContext, admin_key: str) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"y" * 50

    async with client_from(ctx, api_rate_limit="20/minute", max_body_bytes=100) as http:
        streamed = await http.post(
            "/api/storeResults", content=chunks(), headers={"content-type": "application/json"}
        )
        invalid = await http.post("/api/v1/sets", json={"name": 5}, headers=auth(admin_key))
    assert streamed.status_code == 413
    assert_headers(streamed, 20, 19)  # the body never reached the key check: the address counted
    assert invalid.status_code == 422
    assert_headers(invalid, 20, 19)  # the key's own counter


async def test_past_the_limit_guessing_gets_429_even_with_a_right_key(
    ctx: AppContext, admin_key: str
) -> None:
    async with client_from(ctx, "10.9.9.9", api_rate_limit="3/minute") as guesser:
        for number in range(1, 4):
            answer = await guesser.get("/api/v1/me", headers=auth(f"qhk_guess{number}"))
            assert answer.status_code == 401
            assert_headers(answer, 3, 3 - number)
        over = await guesser.get("/api/v1/me", headers=auth("qhk_guess4"))
        assert over.status_code == 429
        assert_headers(over, 3, 0)
        assert 1 <= int(over.headers["Retry-After"]) <= 60
        # While the address is over its limit a right key is not even looked at.
        right = await guesser.get("/api/v1/me", headers=auth(admin_key))
        assert right.status_code == 429
        assert_headers(right, 3, 0)
        compat = await guesser.get("/api/getAllSets", params={"authtoken": admin_key})
        assert compat.status_code == 429
        unknown = await guesser.get("/api/v1/nothing-here")
        assert unknown.status_code == 429
        assert_headers(unknown, 3, 0)
    # Another address is not affected, and requests with a valid key do not use the address's bucket.
    async with client_from(ctx, "10.8.8.8", api_rate_limit="3/minute") as other:
        for number in range(1, 4):
            answer = await other.get("/api/v1/me", headers=auth(admin_key))
            assert answer.status_code == 200
            assert_headers(answer, 3, 3 - number)
        assert (await other.get("/api/v1/me")).status_code == 401


async def test_ui_session_calls_count_per_user(ctx: AppContext) -> None:
    password = person(ctx, "uma", "viewer")
    async with client_from(ctx, "10.7.7.7", ui_rate_limit="2/minute") as browser:
        await login(browser, "uma", password)
        first = await browser.get("/api/v1/me")
        second = await browser.get("/api/v1/me")
        third = await browser.get("/api/v1/me")
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 429)
    assert_headers(first, 2, 1)
    assert_headers(second, 2, 0)
    assert_headers(third, 2, 0)


@pytest.mark.parametrize("path", ["/healthz", "/ui/login"])
async def test_pages_outside_the_api_are_not_counted(ctx: AppContext, path: str) -> None:
    async with client_from(ctx, api_rate_limit="1/minute") as http:
        for _ in range(3):
            answer = await http.get(path)
            assert answer.status_code == 200
            assert "X-RateLimit-Limit" not in answer.headers


async def test_a_valid_key_answered_before_its_check_counts_against_the_key(
    ctx: AppContext, admin_key: str, make_key: object
) -> None:
    """A script calling an operation qhook lacks (AlisQI's getStatistics) with a good key filled
    its address's bucket; past the limit every key from that address got 429."""
    other_key = make_key("viewer", "vic")  # type: ignore[operator]
    async with client_from(ctx, "10.6.6.6", api_rate_limit="3/minute", max_body_bytes=100) as script:
        answers = [
            await script.get("/api/getStatistics", params={"authtoken": admin_key}),  # compat 404
            await script.post(  # compat 400 raised while parsing, key in the header
                "/api/storeResults",
                content=b"{not json",
                headers={**auth(admin_key), "content-type": "application/json"},
            ),
            await script.post("/api/v1/sets", content=b"x" * 500, headers=auth(admin_key)),  # 413
        ]
        assert [a.status_code for a in answers] == [404, 400, 413], [a.text for a in answers]
        for number, answer in enumerate(answers, start=1):
            assert_headers(answer, 3, 3 - number)  # the key's counter
        over = await script.get("/api/getStatistics", params={"authtoken": admin_key})
        assert over.status_code == 429
        assert over.json()["error"].startswith("Rate limit of 3/minute exceeded; retry in")
        assert (await script.get("/api/v1/me", headers=auth(admin_key))).status_code == 429
        # The address's bucket was never touched: another key from the same address works.
        fine = await script.get("/api/v1/me", headers=auth(other_key))
        assert fine.status_code == 200, fine.text
        assert_headers(fine, 3, 2)
        # A request without a valid key still counts against the address.
        nobody = await script.get("/api/getStatistics")
        assert nobody.status_code == 404
        assert_headers(nobody, 3, 2)


async def test_a_refused_body_token_counts_against_the_address_not_a_good_query_key(
    ctx: AppContext, admin_key: str
) -> None:
    """compat takes a body token over the query's: guesses in the body were charged to the good
    key in the query string, and the address's guessing limit never moved."""
    async with client_from(ctx, "10.5.5.5", api_rate_limit="3/minute") as guesser:
        for number in range(1, 4):
            answer = await guesser.post(
                "/api/getAllSets",
                params={"access_token": admin_key},
                data={"access_token": f"qhk_guess{number}"},
            )
            assert answer.status_code == 401
            assert_headers(answer, 3, 3 - number)  # the address's bucket
        over = await guesser.post(
            "/api/getAllSets", params={"access_token": admin_key}, data={"access_token": "qhk_guess4"}
        )
        assert over.status_code == 429
    async with client_from(ctx, "10.4.4.4", api_rate_limit="3/minute") as owner:
        mine = await owner.get("/api/v1/me", headers=auth(admin_key))
        assert mine.status_code == 200
        assert_headers(mine, 3, 2)  # the key itself was never charged for the guesses
