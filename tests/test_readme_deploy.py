"""The README's "Deploy" commands run as written, against a PostgreSQL board of the tests' own
server: two orchestrators in the background, a publish, a third run that waits for the board to
be idle, the board read back, and both background orchestrators drained by `kill`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DEPLOY = README.split("## Deploy", 1)[1].split("\n## ", 1)[0]
SHELL = re.compile(r"```shell\n(.*?)```", re.S)

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")


def blocks() -> tuple[list[str], list[str], list[str]]:
    """The set-up, the commands, and the dashboard's block, comments and blank lines left out."""
    setup, commands, watch = (
        [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
        for block in SHELL.findall(DEPLOY)
    )
    return setup, [c for c in commands if c], watch


def test_the_set_up_is_the_extra_a_database_and_the_board_variable() -> None:
    setup, _, _ = blocks()
    assert setup == [
        'pip install -e ".[postgres]"',
        "createdb flock",
        "export FLOCK_BOARD=postgresql:///flock",
    ]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^postgres = \[", pyproject, re.M)  # the extra the first line installs


def test_deploy_commands_run_in_order(tmp_path: Path, postgres_url: str) -> None:
    _, commands, watch = blocks()
    assert commands[0].endswith("--watch &") and commands[1].endswith("--watch &")
    assert len(watch) == 1 and watch[0].startswith("flock top")
    assert commands[-1].startswith("kill %1 %2")
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "100"}
    env["FLOCK_BOARD"] = postgres_url  # the set-up's `export`, on the tests' server
    env.pop("FLOCK_TRACES", None)  # traces as a user has them: .flock/traces.duckdb, for flock top
    env["PYTHONPATH"] = str(ROOT)  # for tests/readme_top.py, run from the copy's folder
    script = ["set -m", "set -e", "pids=()"]
    for command in commands:
        if command.startswith("kill"):  # first the dashboard, while both orchestrators are in the board
            top = watch[0].replace("flock top", f"{sys.executable} {ROOT / 'tests' / 'readme_top.py'}", 1)
            script += [
                'echo "orchestrators ${pids[0]} ${pids[1]}"',
                f"FLOCK_TOP_ROWS=2 {top} || echo top failed",
            ]
            # bash keeps the exit status of a background pid
            script += [command, "set +e", "wait ${pids[0]}; first=$?", "wait ${pids[1]}; second=$?"]
            script.append('echo "drained $first $second"')
        else:
            script += [command, "pids+=($!)"] if command.endswith("&") else [command]
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, f"{done.stderr}\n{done.stdout}"
    assert "4 of 4 artifacts" in done.stdout  # three submissions published, one by the third run
    assert "drained 0 0" in done.stdout  # both orchestrators stopped cleanly on SIGTERM
    assert "Traceback" not in done.stderr and "top failed" not in done.stdout, done.stderr
    assert done.stdout.count("stopped ok") == 2
    # flock top listed both orchestrators: the pid column of the Processes panel
    pids = set(done.stdout.split("orchestrators ", 1)[1].split("\n", 1)[0].split())
    listed = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("process:")]
    assert len(pids) == 2 and pids <= {cell.strip() for row in listed for cell in row}, done.stdout
