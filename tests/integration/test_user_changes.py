"""Changing users on SQLite and PostgreSQL: admin PATCH and GET, a person's own password, the CLI,
deactivation stopping keys and sessions, the last-admin guard, an audit entry per change (never a
password), and the UI account page."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner, Result

from qhook.cli import app
from qhook.context import AppContext
from qhook.services import audit, users
from tests.conftest import TEST_SECRET_KEY, auth
from tests.integration.test_web import csrf_of, login, make_browser
from tests.support.hub_data import ensure_sets


def user_id(ctx: AppContext, name: str) -> int:
    return users.user_named(ctx.db, name).id


async def audit_of(api: httpx.AsyncClient, target: int) -> list[dict[str, object]]:
    listed = await api.get("/api/v1/audit", params={"target_type": "user", "limit": 100})
    assert listed.status_code == 200, listed.text
    return [e for e in listed.json()["items"] if e["target_id"] == str(target)]


async def test_admin_changes_role_sets_and_password(
    api: httpx.AsyncClient, ctx: AppContext, make_key
) -> None:  # type: ignore[no-untyped-def]
    ensure_sets(ctx.db, 1, 3)
    key = make_key("viewer", "vera")
    vera = user_id(ctx, "vera")
    got = await api.get(f"/api/v1/users/{vera}")
    assert got.status_code == 200
    assert got.json()["name"] == "vera" and got.json()["role"] == "viewer"

    changed = await api.patch(f"/api/v1/users/{vera}", json={"role": "editor", "set_ids": [3, 1]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "editor" and changed.json()["set_ids"] == [1, 3]
    me = await api.get("/api/v1/me", headers=auth(key))  # the key acts with the new role at once
    assert me.json() == {"name": "vera", "role": "editor", "set_ids": [1, 3]}

    lifted = await api.patch(f"/api/v1/users/{vera}", json={"set_ids": None})
    assert lifted.json()["set_ids"] is None and lifted.json()["role"] == "editor"

    reset = await api.patch(f"/api/v1/users/{vera}", json={"password": "a-new-secret-1"})
    assert reset.status_code == 200
    assert users.check_password(ctx.db, "vera", "a-new-secret-1").id == vera

    entries = await audit_of(api, vera)
    updates = [e for e in entries if e["action"] == "user.update"]
    assert [e["details"] for e in reversed(updates)] == [
        {"name": "vera", "role": "editor", "set_ids": [1, 3]},
        {"name": "vera", "set_ids": None},
        {"name": "vera", "password_changed": True},
    ]
    assert all(e["actor"] == "alice" for e in updates)
    assert "a-new-secret-1" not in str(entries)


async def test_bad_changes_are_refused(api: httpx.AsyncClient, ctx: AppContext, make_key) -> None:  # type: ignore[no-untyped-def]
    viewer = make_key("viewer", "vic")
    vic = user_id(ctx, "vic")
    for body, field in (
        ({"role": "owner"}, "role"),
        ({"password": "short"}, "password"),
        ({"rol": "admin"}, "rol"),
        ({"role": None}, "role"),
        ({}, None),
    ):
        answer = await api.patch(f"/api/v1/users/{vic}", json=body)
        assert answer.status_code == 422, (body, answer.text)
        if field:
            assert field in answer.text
    assert (await api.get("/api/v1/users/9999")).status_code == 404
    assert (await api.patch("/api/v1/users/9999", json={"active": False})).status_code == 404
    refused = await api.patch(f"/api/v1/users/{vic}", json={"role": "admin"}, headers=auth(viewer))
    assert refused.status_code == 403
    assert (await api.get(f"/api/v1/users/{vic}", headers=auth(viewer))).status_code == 403
    assert users.get_user(ctx.db, vic).role == "viewer"


async def test_the_last_active_admin_stays(api: httpx.AsyncClient, ctx: AppContext) -> None:
    alice = user_id(ctx, "alice")
    for body in ({"role": "editor"}, {"active": False}):
        answer = await api.patch(f"/api/v1/users/{alice}", json=body)
        assert answer.status_code == 409, answer.text
        assert "last active admin" in answer.json()["error"]
    users.create_user(ctx.db, "bert", "admin", password="password-bert")
    demoted = await api.patch(f"/api/v1/users/{alice}", json={"role": "editor"})
    assert demoted.status_code == 200
    assert (await api.get("/api/v1/users")).status_code == 403  # alice is an editor now


async def test_deactivation_stops_keys_and_sessions(
    api: httpx.AsyncClient, ctx: AppContext, make_key
) -> None:  # type: ignore[no-untyped-def]
    key = make_key("editor", "eddy")
    eddy = user_id(ctx, "eddy")
    async with make_browser(ctx) as browser:
        await login(browser, "eddy", "password-eddy")
        assert (await browser.get("/api/v1/me")).status_code == 200
        off = await api.patch(f"/api/v1/users/{eddy}", json={"active": False})
        assert off.status_code == 200 and off.json()["active"] is False
        assert (await api.get("/api/v1/me", headers=auth(key))).status_code == 401
        assert (await browser.get("/api/v1/me")).status_code == 401
        page = await browser.get("/ui/hub")
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
        with pytest.raises(Exception, match="wrong password"):
            users.check_password(ctx.db, "eddy", "password-eddy")
    on = await api.patch(f"/api/v1/users/{eddy}", json={"active": True})
    assert on.json()["active"] is True
    assert (await api.get("/api/v1/me", headers=auth(key))).status_code == 200  # keys were kept
    assert [e["details"]["active"] for e in await audit_of(api, eddy) if e["action"] == "user.update"] == [
        True,
        False,
    ]


async def test_own_password_change(api: httpx.AsyncClient, ctx: AppContext, make_key) -> None:  # type: ignore[no-untyped-def]
    key = make_key("viewer", "paula")
    paula = user_id(ctx, "paula")
    async with make_browser(ctx) as here, make_browser(ctx) as elsewhere:
        csrf = await login(here, "paula", "password-paula", next_url="/ui/account")
        await login(elsewhere, "paula", "password-paula")
        page = await here.get("/ui/account")
        assert page.status_code == 200
        assert 'data-action="password"' in page.text and 'name="current_password"' in page.text
        wrong = await here.post(
            "/api/v1/me/password",
            json={"current_password": "nope-nope", "new_password": "brand-new-pass"},
            headers={"X-Qhook-CSRF": csrf},
        )
        assert wrong.status_code == 403 and "current_password" in wrong.json()["error"]
        no_csrf = await here.post(
            "/api/v1/me/password",
            json={"current_password": "password-paula", "new_password": "brand-new-pass"},
        )
        assert no_csrf.status_code == 403
        short = await here.post(
            "/api/v1/me/password",
            json={"current_password": "password-paula", "new_password": "short"},
            headers={"X-Qhook-CSRF": csrf},
        )
        assert short.status_code == 422
        done = await here.post(
            "/api/v1/me/password",
            json={"current_password": "password-paula", "new_password": "brand-new-pass"},
            headers={"X-Qhook-CSRF": csrf_of((await here.get("/ui/account")).text)},
        )
        assert done.status_code == 204, done.text
        assert (await here.get("/api/v1/me")).status_code == 200  # this session stays
        assert (await elsewhere.get("/api/v1/me")).status_code == 401  # the other one ended
    assert users.check_password(ctx.db, "paula", "brand-new-pass").id == paula
    by_key = await api.post(
        "/api/v1/me/password",
        json={"current_password": "brand-new-pass", "new_password": "newer-still-1"},
        headers=auth(key),
    )
    assert by_key.status_code == 204
    entries = [e for e in await audit_of(api, paula) if e["action"] == "user.password"]
    assert len(entries) == 2 and all(e["actor"] == "paula" for e in entries)
    assert "brand-new-pass" not in str(entries) and "newer-still-1" not in str(entries)


async def test_guessing_the_current_password_is_limited(
    api: httpx.AsyncClient,
    ctx: AppContext,
    make_key,  # type: ignore[no-untyped-def]
) -> None:
    """With a stolen API key, wrong current passwords could be tried without end (25 in 4 s, no
    429), and a hit handed over the account. Sign-in is not held off by it."""
    key = make_key("editor", "gina")
    answers = [
        (
            await api.post(
                "/api/v1/me/password",
                json={"current_password": f"guess-{n}", "new_password": "taken-over-1"},
                headers=auth(key),
            )
        ).status_code
        for n in range(11)
    ]
    assert answers == [403] * 10 + [429]
    right = await api.post(
        "/api/v1/me/password",
        json={"current_password": "password-gina", "new_password": "taken-over-1"},
        headers=auth(key),
    )
    assert right.status_code == 429 and "Retry-After" in right.headers
    assert users.check_password(ctx.db, "gina", "password-gina").name == "gina"  # unchanged
    async with make_browser(ctx) as browser:
        await login(browser, "gina", "password-gina")


@pytest.fixture
def run(db_url: str, tmp_path: Path, ctx: AppContext):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    env = {
        "QHOOK_DATABASE_URL": db_url,
        "QHOOK_DATA_DIR": str(tmp_path / "var"),
        "QHOOK_SECRET_KEY": TEST_SECRET_KEY,
    }

    def _run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), env=env, input=input, catch_exceptions=False)

    return _run


def test_cli_list_update_and_set_password(run, ctx: AppContext) -> None:  # type: ignore[no-untyped-def]
    users.create_user(ctx.db, "carl", "viewer", password="password-carl")
    ensure_sets(ctx.db, 2, 5)
    listed = run("user", "list")
    assert listed.exit_code == 0, listed.output
    line = next(row for row in listed.stdout.splitlines() if "carl" in row)
    assert "viewer" in line and "all" in line and "yes" in line

    updated = run("user", "update", "carl", "--role", "editor", "--sets", "2,5", "--inactive")
    assert updated.exit_code == 0, updated.output
    assert "user carl: editor, sets 2,5, inactive" in updated.stdout
    carl = users.user_named(ctx.db, "carl")
    assert (carl.role, carl.set_ids, carl.active) == ("editor", (2, 5), False)
    back = run("user", "update", "carl", "--sets", "all", "--active")
    assert "user carl: editor, sets all, active" in back.stdout

    changed = run("user", "set-password", "carl", input="cli-secret-99\ncli-secret-99\n")
    assert changed.exit_code == 0, changed.output
    assert "cli-secret-99" not in changed.stdout.replace("Password: ", "")  # hidden input is not echoed
    assert users.check_password(ctx.db, "carl", "cli-secret-99").name == "carl"

    unknown = run("user", "update", "nobody", "--role", "viewer")
    assert unknown.exit_code == 1 and "no user named 'nobody'" in unknown.output
    bad = run("user", "set-password", "carl", "--password", "short")
    assert bad.exit_code == 1 and "at least 8 characters" in bad.output
    entries = audit.list_entries(ctx.db, limit=50, target_type="user")
    mine = [e for e in entries if e.actor == "cli" and e.action == "user.update"]
    assert len(mine) == 3 and "cli-secret-99" not in str(mine)


async def test_user_names_are_unique_whatever_the_case_and_not_qhooks_own(
    api: httpx.AsyncClient, ctx: AppContext
) -> None:
    """'REV' beside 'rev', a user called 'system' (the audit trail's name for qhook itself) and a
    name with a zero-width space were all accepted."""
    body = {"role": "viewer", "password": "password-12345"}
    assert (await api.post("/api/v1/users", json={**body, "name": "rev"})).status_code == 201
    twin = await api.post("/api/v1/users", json={**body, "name": "REV"})
    assert twin.status_code == 409 and "'rev' exists already (names ignore case)" in twin.json()["error"]
    for name in ("system", "CLI", "scheduler", "re\u200bv", "a\x01b"):
        refused = await api.post("/api/v1/users", json={**body, "name": name})
        assert refused.status_code == 422, (name, refused.text)
        assert refused.json()["details"][0]["field"] == "name"
    assert sorted(u.name for u in users.list_users(ctx.db) if u.name.lower() in ("rev", "system", "cli")) == [
        "rev"
    ]
