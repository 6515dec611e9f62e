"""Pre-release only: rewrite migration 0001 from the current tables.

Run: .venv/bin/python scripts/regen_initial_migration.py

Once a release is out, add new revisions with ``alembic revision --autogenerate`` instead.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command

from qhook.store.db import Database
from qhook.store.migrate import MIGRATIONS, alembic_config

versions = MIGRATIONS / "versions"
# Only 0001 is generated; later revisions are hand-written (0002: SQLite's body-search index) and
# set aside meanwhile: autogenerate needs an empty history to write a first revision.
kept = {p.name: p.read_text() for p in versions.glob("*.py") if not p.name.startswith("0001_")}
for old in versions.glob("*.py"):
    old.unlink()
try:
    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{Path(folder) / 'empty.db'}")
        command.revision(alembic_config(db), message="initial schema", autogenerate=True, rev_id="0001")
        db.dispose()
finally:
    for name, source in kept.items():
        (versions / name).write_text(source)
print("wrote", *sorted(p.name for p in (MIGRATIONS / "versions").glob("*.py")))
