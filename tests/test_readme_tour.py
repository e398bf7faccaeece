"""The README's set-up and tour commands run as written, with the exit codes and output it shows."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONSOLE = re.compile(r"```console\n(.*?)```", re.S)
TEXT = re.compile(r"```text\n(.*?)```", re.S)
EXIT = re.compile(r"\s+#\s*exit (\d+)\s*$")


def tour_script() -> str:
    """Every `$ command` of the console blocks, each checked against its `# exit N` (default 0)."""
    lines = ["set -m"]  # job control: `&` and `kill -INT %1` behave as in a terminal
    for block in CONSOLE.findall(README):
        for line in block.splitlines():
            if not line.startswith("$ "):
                continue
            command = line[2:]
            match = EXIT.search(command)
            expected = int(match.group(1)) if match else 0
            command = EXIT.sub("", command)
            if command.endswith("&"):
                lines.append(command)
                continue
            lines.append(f"{command}\ncode=$?")
            failed = f'echo "FAILED ($code): "{shlex.quote(command)} >&2; exit 1'
            lines.append(f'[ "$code" -eq {expected} ] || {{ {failed}; }}')
    return "\n".join(lines) + "\n"


def environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "100"}
    env.pop("FLOCK_TRACES", None)  # the tour traces into .flock/traces.duckdb, as a user's would
    return env


def test_tour_commands_run_in_order(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    recipes_before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "recipes").rglob("*"))
    script = tour_script()
    assert script.count("flock ") >= 10
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"{done.stderr}\n{done.stdout}"
    assert "Resolution" in done.stdout  # the watching run served what `flock publish` wrote
    assert "researcher" in done.stdout and "critical path" in done.stdout  # trace show, timeline
    # The tour leaves nothing in the repository but what git ignores (.flock/).
    assert sorted(p.name for p in tmp_path.iterdir()) == [".flock", "recipes"]
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "recipes").rglob("*")) == recipes_before


def test_shown_outputs_match_the_commands(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    graph_block, error_block = TEXT.findall(README)[:2]
    graph = subprocess.run(
        ["flock", "graph", "recipes/code_review.yaml"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
    )
    assert graph.stdout == graph_block
    (tmp_path / ".flock").mkdir()
    (tmp_path / ".flock" / "broken.yaml").write_text(
        "agents:\n  critic:\n    consumes: Movie\n    engine: tst\n"
    )
    broken = subprocess.run(
        ["flock", "validate", ".flock/broken.yaml"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
    )
    assert broken.returncode == 2
    assert broken.stderr == error_block


def test_setup_commands_are_what_ci_runs() -> None:
    setup = re.findall(r"```bash\n(.*?)```", README, re.S)
    assert setup[0].startswith(
        'python3 -m venv .venv && CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" .venv/bin/pip install'
        ' -e ".[dev,local]" && .venv/bin/flock run '
    )
    assert "--model local" in setup[0]  # the example runs on the real local model
    assert setup[1].strip() == ".venv/bin/pytest -n auto"
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/pytest -n auto" in ci and '-e ".[dev,local]"' in ci
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF"' in ci  # the same build as the README's
    assert setup[0].split("&& ")[-1].strip() in ci  # CI runs the example recipe command too
