"""``python -m flock_cli`` runs the ``flock`` command."""

from flock_cli.cli import run

run()
