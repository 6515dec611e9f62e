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

for old in (MIGRATIONS / "versions").glob("*.py"):
    old.unlink()
with tempfile.TemporaryDirectory() as folder:
    db = Database(f"sqlite:///{Path(folder) / 'empty.db'}")
    command.revision(alembic_config(db), message="initial schema", autogenerate=True, rev_id="0001")
    db.dispose()
print("wrote", *sorted(p.name for p in (MIGRATIONS / "versions").glob("*.py")))
