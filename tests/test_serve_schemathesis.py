"""schemathesis against the live OpenAPI document of a real `flock serve`: every operation but the
endless event stream, every check (no 5xx answer, every answer as documented, valid requests
accepted and invalid ones refused), as an operator token and as a tenant's token."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flock_cli.recipe.loader import load_recipe
from flock_cli.store.sqlite import SQLiteBlackboardStore
from tests.serve_helpers import ROOT, TOKENS, in_thread, token_file

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("schemathesis", reason="schemathesis is not installed (the [dev] extra)")


@pytest.mark.parametrize("who", ["ops", "acme-app"])
def test_the_live_openapi_document_holds(tmp_path: Path, who: str) -> None:
    flock = load_recipe(ROOT / "recipes" / "multi_tenant.yaml").build(
        store=SQLiteBlackboardStore(tmp_path / "board.db"), engine_override="test", traces=False
    )
    served = flock.serve(port=0, tokens=token_file(tmp_path), requests_per_second=100_000, burst=100_000)
    command = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    with in_thread(served) as url:
        result = subprocess.run(
            [
                command, "run", f"{url}/openapi.json",
                "-H", f"Authorization: Bearer {TOKENS[who][0]}",
                "--checks", "all",
                "--exclude-operation-id", "follow_events",  # an endless stream: tests/test_serve.py
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", "40",
                "--seed", "16",
                "--workers", "1",
            ],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    counts = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert counts is not None and int(counts[1]) > 100 and counts[1] == counts[2], summary
