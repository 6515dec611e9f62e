"""Shared fixtures: a fresh database per test on SQLite and on a real PostgreSQL, the app, keys."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, settings

from qhook.api.app import create_app
from qhook.context import AppContext, open_context
from qhook.services import users
from qhook.settings import Settings
from qhook.store import migrate
from qhook.store.db import Database
from tests.support import pg

# The machine is shared and its speed varies several-fold: how fast examples are drawn or run is
# the benchmarks' business, not a property a test can fail on (one run failed "input generation is
# slow" while other processes held the cores).
settings.register_profile("qhook", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("qhook")

TEST_SECRET_KEY = Fernet.generate_key().decode()
_counter = itertools.count()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db_url") == "postgres":
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[pg.PgServer]:
    server = pg.start()
    try:
        with psycopg.connect(server.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("CREATE DATABASE qhook_template")
        template = Database(server.url("qhook_template"))
        migrate.upgrade(template)
        template.dispose()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    template = Database(f"sqlite:///{path}")
    migrate.upgrade(template)
    template.dispose()
    return path


def fresh_postgres_url(server: pg.PgServer) -> str:
    name = f"t{next(_counter)}"
    with psycopg.connect(server.url("postgres").replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE qhook_template")
    return server.url(name)


def fresh_sqlite_url(template: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "qhook.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """A migrated, empty database of each kind; tests using it run once per kind."""
    if request.param == "sqlite":
        return fresh_sqlite_url(sqlite_template, tmp_path / "db")
    server: pg.PgServer = request.getfixturevalue("pg_server")
    return fresh_postgres_url(server)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=db_url,
        secret_key=TEST_SECRET_KEY,  # type: ignore[arg-type]
        api_rate_limit="100000/minute",
        allow_http=True,
        allowed_target_networks="127.0.0.0/8,::1/128",
        poll_interval_s=0.2,
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[AppContext]:
    context = open_context(settings)
    yield context
    context.db.dispose()


@pytest.fixture
def db(ctx: AppContext) -> Database:
    return ctx.db


@pytest.fixture
def app_factory(ctx: AppContext):  # type: ignore[no-untyped-def]
    return lambda: create_app(ctx)


@pytest.fixture
async def client(ctx: AppContext) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(ctx)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


def _key(ctx: AppContext, role: str, name: str, set_ids: list[int] | None = None) -> str:
    users.create_user(ctx.db, name, role, password="password-" + name, set_ids=set_ids)
    return users.create_api_key(ctx.db, name, label="tests")[1]


@pytest.fixture
def admin_key(ctx: AppContext) -> str:
    return _key(ctx, "admin", "alice")


@pytest.fixture
def editor_key(ctx: AppContext) -> str:
    return _key(ctx, "editor", "erin")


@pytest.fixture
def viewer_key(ctx: AppContext) -> str:
    return _key(ctx, "viewer", "victor")


@pytest.fixture
def make_key(ctx: AppContext):  # type: ignore[no-untyped-def]
    """make_key(role, name, set_ids=None) -> plain API key."""
    return lambda role, name, set_ids=None: _key(ctx, role, name, set_ids)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def api(client: httpx.AsyncClient, admin_key: str) -> httpx.AsyncClient:
    """The test client acting as an admin."""
    client.headers.update(auth(admin_key))
    return client
