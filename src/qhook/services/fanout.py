"""The seam between a result change and the workflows of its set."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qhook.context import AppContext
    from qhook.store.db import Tx
    from qhook.store.events import EventRecord


def after_event(tx: Tx, ctx: AppContext, event: EventRecord) -> list[dict[str, object]]:
    """Evaluate the set's workflows for ``event`` inside its transaction; return the evaluations.

    The workflow engine fills this in (deliveries, on_date schedules, chained signals); until then
    no workflow runs and the evaluations are empty.
    """
    return []
