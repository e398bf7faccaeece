"""The ``flock`` command line (Typer). ``main`` returns an exit code; ``run`` is the console script.

Exit codes: 0 success; 1 the command ran and found failures (failed runs, dead letters,
breaker trips, warnings from ``flock check``); 2 a usage mistake (bad recipe, payload, option
or file), reported as one message without a traceback; 130 a run stopped by Ctrl-C
before it finished (one Ctrl-C ending a ``--watch`` run is a normal stop).
"""

from __future__ import annotations

import errno
import sys

__all__ = ["main", "run"]


EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    try:
        from flock_cli.cli.app import app

        app(args=sys.argv[1:] if argv is None else argv, prog_name="flock", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KeyboardInterrupt:
        # A Ctrl-C before a command takes the signal over (while Python imports it, say): the
        # command had not started, so there is nothing to report but the interruption.
        return EXIT_INTERRUPTED
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        # The output could not be written (a full disk, `> /dev/full`): say so on stderr.
        sys.stderr.write(f"error: cannot write the output: {exc.strerror}\n")
        return 1
    return 0


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
