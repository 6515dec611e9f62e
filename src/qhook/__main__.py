"""``python -m qhook``: the same command as ``qhook``."""

from qhook.cli import app

app(prog_name="qhook")
