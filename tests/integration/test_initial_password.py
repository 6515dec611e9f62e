"""The first admin's password file goes once the password in it no longer signs in."""

from __future__ import annotations

import httpx

from qhook import initial_password
from qhook.context import AppContext
from qhook.services import users
from tests.conftest import auth


def _first_admin(ctx: AppContext) -> tuple[str, str]:
    credentials = users.bootstrap_admin(ctx.db)
    assert credentials is not None
    name, password = credentials
    ctx.settings.data_dir.mkdir(parents=True, exist_ok=True)
    (ctx.settings.data_dir / initial_password.FILE_NAME).write_text(password + "\n")
    return name, password


def test_the_file_stays_while_its_password_works_and_goes_after(ctx: AppContext) -> None:
    name, password = _first_admin(ctx)
    path = ctx.settings.data_dir / initial_password.FILE_NAME
    assert initial_password.retire(ctx) is False
    assert path.read_text().strip() == password
    users.update_user(ctx.db, users.user_named(ctx.db, name).id, actor="test", password="changed-by-cli")
    assert initial_password.retire(ctx) is True
    assert not path.exists()
    assert initial_password.retire(ctx) is False  # nothing left to remove


async def test_a_change_through_the_api_removes_the_file(ctx: AppContext, client: httpx.AsyncClient) -> None:
    name, password = _first_admin(ctx)
    path = ctx.settings.data_dir / initial_password.FILE_NAME
    key = users.create_api_key(ctx.db, name, label="tests")[1]
    wrong = await client.post(
        "/api/v1/me/password",
        json={"current_password": "not-the-one", "new_password": "brand-new-pass"},
        headers=auth(key),
    )
    assert wrong.status_code == 403
    assert path.exists()  # the password in it still works
    done = await client.post(
        "/api/v1/me/password",
        json={"current_password": password, "new_password": "brand-new-pass"},
        headers=auth(key),
    )
    assert done.status_code == 204, done.text
    assert not path.exists()


async def test_another_admin_setting_the_password_removes_the_file(
    ctx: AppContext, client: httpx.AsyncClient
) -> None:
    name, _ = _first_admin(ctx)
    path = ctx.settings.data_dir / initial_password.FILE_NAME
    users.create_user(ctx.db, "alice", "admin", password="password-alice")
    client.headers.update(auth(users.create_api_key(ctx.db, "alice", label="tests")[1]))
    admin_id = users.user_named(ctx.db, name).id
    same_role = await client.patch(f"/api/v1/users/{admin_id}", json={"role": "admin"})
    assert same_role.status_code == 200
    assert path.exists()  # no password given: nothing changed
    done = await client.patch(f"/api/v1/users/{admin_id}", json={"password": "set-by-alice"})
    assert done.status_code == 200, done.text
    assert not path.exists()
