"""The README's "Serve over HTTP" commands run as written (in a scratch folder beside a copy of
recipes/, on a free port instead of 8344), and docs/serve.md's token file is one the service reads."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flock_cli.service.tokens import TokenBook
from tests.serve_helpers import free_port

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")

ROOT = Path(__file__).resolve().parent.parent
SECTION = (ROOT / "README.md").read_text().split("## Serve over HTTP", 1)[1].split("\n## ", 1)[0]
SERVE_DOC = (ROOT / "docs" / "serve.md").read_text()


def test_the_readme_serve_tour(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    block = re.search(r"```shell\n(.*?)```", SECTION, re.S)
    assert block is not None
    port = str(free_port())
    script = block[1].replace("8344", port).replace("flock serve ", f"flock serve --port {port} ")
    script += "wait\n"  # the server's exit, after `kill %1`
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    # Its own process group: if the tour hangs, the server it started in the background goes too.
    process = subprocess.Popen(
        ["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert '"status":"ready"' in out
    events = re.findall(r"^event: (\S+)$", out, re.M)
    assert sorted(events) == sorted(["artifact.published"] * 2 + ["run.started", "run.finished"] * 2), out
    # Replayed from the workflow's start: every run after the artifacts it works on, each event
    # with an id of its own.
    datas = [json.loads(d) for d in re.findall(r"^data: (.*)$", out, re.M)]
    published = [d["artifact"]["id"] for d in datas if "artifact" in d]
    for i, data in enumerate(datas):
        for input_id in data.get("inputs", []):
            assert input_id in published[: sum("artifact" in d for d in datas[:i])], out
    ids = re.findall(r"^id: (\S+)$", out, re.M)
    assert len(set(ids)) == len(ids), out
    numbers = [int(i.split(":")[2]) for i in ids]
    positions = [int(i.split(":")[0]) for i in ids]
    assert numbers == sorted(numbers) and positions == sorted(positions), out  # ids only count up
    assert '"type":"Case"' in out and '"agent":"acme_support"' in out
    assert '"type":"Escalation"' not in out  # labelled for compliance: not Acme's to see
    assert '{"items":[],"total":0,' in out  # Globex reads nothing of Acme's
    assert "flock serve stopped:" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "tokens.yaml").exists() and "flk_" not in (tmp_path / "tokens.yaml").read_text()


def test_the_documented_token_file_is_read() -> None:
    block = re.search(r"```yaml\n(# tokens.yaml\n.*?)```", SERVE_DOC, re.S)
    assert block is not None
    book = TokenBook.parse(block[1], "docs/serve.md")
    principal = book.lookup("flk_example-token")
    assert principal is not None and principal.identity.tenant_id == "acme"
    assert principal.can_publish("SupportRequest") and not principal.can_publish("Case")
