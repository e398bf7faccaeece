"""The ``flock`` command line (Typer). ``main`` returns an exit code; ``run`` is the console script.

Exit codes: 0 success; 1 the command ran and found failures (failed runs, dead letters,
breaker trips, warnings from ``flock check``); 2 a usage mistake (bad recipe, payload, option
or file), reported as one message without a traceback; 130 a run stopped by Ctrl-C
before it finished (one Ctrl-C ending a ``--watch`` run is a normal stop).
"""

from __future__ import annotations

import sys

__all__ = ["main", "run"]


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    from flock_cli.cli.app import app

    try:
        app(args=sys.argv[1:] if argv is None else argv, prog_name="flock", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
