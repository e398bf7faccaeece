"""The ``flock`` console script. The full Typer command line (run, publish, trace, top) is being
built; until then only ``--version`` and ``--help`` exist and anything else exits 2."""

from __future__ import annotations

import sys

__all__ = ["main"]

_HELP = """usage: flock [--version] [--help]

Flock-Flow, a blackboard-first multi-agent orchestrator.
This release ships the Python runtime (import flock_cli); the commands
run, publish, validate, trace and top are not available yet.
"""


_PLANNED = frozenset(
    {"run", "publish", "validate", "check", "graph", "schema", "init", "board", "trace", "top"}
)


def main(argv: list[str] | None = None) -> int:
    """Entry point: returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if args in ([], ["--help"], ["-h"]):
        sys.stdout.write(_HELP)
        return 0
    if args == ["--version"]:
        from flock_cli import __version__

        sys.stdout.write(f"flock-flow {__version__}\n")
        return 0
    if args[0] in _PLANNED:
        sys.stderr.write(
            f"flock: the '{args[0]}' command is not available in this release yet;"
            " the Python runtime is (import flock_cli). See flock --help.\n"
        )
        return 2
    sys.stderr.write(f"flock: unknown command or option: {' '.join(args)} (see flock --help)\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


def run() -> None:
    """Console-script wrapper: exit with :func:`main`'s code."""
    raise SystemExit(main())
