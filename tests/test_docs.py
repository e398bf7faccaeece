"""Every python code block in README.md and docs/*.md runs, as a user would run it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, code in enumerate(BLOCK.findall(doc.read_text())):
            found.append((f"{doc.name}#{i + 1}", code))
    return found


def test_the_docs_have_examples() -> None:
    names = [name for name, _ in blocks()]
    assert any(n.startswith("README.md") for n in names)
    assert sum(n.startswith("python-api.md") for n in names) >= 4


@pytest.mark.parametrize(("name", "code"), blocks(), ids=[n for n, _ in blocks()])
def test_example_runs(name: str, code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stderr}"
    assert done.stdout.strip(), f"{name} printed nothing"
