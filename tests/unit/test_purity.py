"""Invariant 7: the decision modules in ``qhook.domain`` are pure (data in, data out, ``now`` passed in).

Read from their source with ``ast``: no module imports I/O, the database, the network, the worker,
the services or the clock, and none reads the time or opens a file itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qhook.domain

DOMAIN = Path(qhook.domain.__file__).parent
MODULES = sorted(DOMAIN.glob("*.py"))

# A module is forbidden with everything below it ("qhook.store" covers "qhook.store.queue").
FORBIDDEN_IMPORTS = (
    "sqlalchemy",
    "aiohttp",
    "httpx",
    "socket",
    "requests",
    "smtplib",
    "asyncio",
    "subprocess",
    "qhook.store",
    "qhook.delivery",
    "qhook.services",
    "qhook.clock",
    "qhook.api",
    "qhook.web",
    "qhook.context",
    "psycopg",
    "urllib.request",
    "http.client",
    "shutil",
)
# Calls that read the clock: the time of a decision is always passed in.
CLOCK_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "perf_counter"),
}
# Explicit exceptions, each with its reason. Empty: no domain module needs one today.
ALLOWED: dict[str, set[str]] = {}


def imported_modules(tree: ast.Module, module_name: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against qhook.domain
                base = module_name.rsplit(".", node.level)[0]
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            # "from qhook import store" imports the package qhook.store.
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def forbidden_in(names: set[str]) -> set[str]:
    return {name for name in names for bad in FORBIDDEN_IMPORTS if name == bad or name.startswith(bad + ".")}


def dotted(node: ast.expr) -> list[str]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return list(reversed(parts))


def impure_calls(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        parts = dotted(node.func)
        if len(parts) >= 2 and (parts[-2], parts[-1]) in CLOCK_CALLS:
            found.append(f"{'.'.join(parts)}() at line {node.lineno}")
        elif parts in (["open"], ["io", "open"]) or parts[-1:] in (["read_text"], ["read_bytes"]):
            found.append(f"{'.'.join(parts)}() at line {node.lineno}")
    return found


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def test_the_domain_package_has_the_decision_modules() -> None:
    names = {path.stem for path in MODULES}
    expected = {"fields", "filters", "triggers", "payloads", "signing", "retry", "schedule", "hints"}
    assert expected <= names, f"missing decision modules: {expected - names}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_domain_module_imports_no_io(path: Path) -> None:
    names = imported_modules(parse(path), f"qhook.domain.{path.stem}")
    bad = forbidden_in(names) - ALLOWED.get(path.name, set())
    assert not bad, f"{path.name} imports {sorted(bad)}: decisions must not do I/O"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_domain_module_reads_no_clock_and_no_files(path: Path) -> None:
    calls = impure_calls(parse(path))
    assert not calls, f"{path.name} calls {calls}: pass `now` (and data) in instead"


def test_the_checks_catch_what_they_look_for() -> None:
    """The scanners themselves: a module that breaks every rule is caught on each."""
    source = (
        "import asyncio\n"
        "from qhook import store\n"
        "from sqlalchemy.orm import Session\n"
        "from ..delivery import worker\n"
        "from datetime import datetime\n"
        "import time\n"
        "def decide():\n"
        "    a = datetime.now()\n"
        "    b = time.time()\n"
        "    return open('x').read()\n"
    )
    tree = ast.parse(source)
    bad = forbidden_in(imported_modules(tree, "qhook.domain.example"))
    assert {"asyncio", "qhook.store", "sqlalchemy.orm", "qhook.delivery.worker"} <= bad
    calls = impure_calls(tree)
    assert sorted(c.split("(")[0] for c in calls) == ["datetime.now", "open", "time.time"]
    clean = ast.parse("from datetime import time, datetime\nfrom qhook.domain.urls import origin_of\n")
    assert not forbidden_in(imported_modules(clean, "qhook.domain.example"))
