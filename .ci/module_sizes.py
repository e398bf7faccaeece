"""Keep modules small: warn above 400 lines, fail above 600 (see the style guide)."""

from __future__ import annotations

import sys
from pathlib import Path

WARN, LIMIT = 400, 600


def main() -> int:
    failed = False
    for path in sorted(Path("flock_cli").rglob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > LIMIT:
            print(f"{path}: {lines} lines (limit {LIMIT})", file=sys.stderr)
            failed = True
        elif lines > WARN:
            print(f"warning: {path}: {lines} lines (over {WARN})")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
