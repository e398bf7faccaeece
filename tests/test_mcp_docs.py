"""The examples of docs/mcp.md (MCP servers in recipes) are real: the recipes load, the notes
example's servers start and offer the tools its agent names, and the Python example works."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from flock_cli.cli.app import app
from flock_cli.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "mcp.md"


def block(lang: str, header: str = "") -> str:
    for found_lang, body in re.findall(
        r"^```(\w+)\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M
    ):
        if found_lang == lang and body.startswith(header):
            return str(body)
    raise AssertionError(f"docs/mcp.md has no {lang} block starting {header!r}")


def test_the_notes_example_loads_and_its_server_offers_the_named_tools(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "recipes" / "mcp", tmp_path / "mcp")
    (tmp_path / "recordings").mkdir()
    shutil.copy(ROOT / "recipes" / "recordings" / "notes_qa.jsonl", tmp_path / "recordings")
    recipe = tmp_path / "notes.yaml"
    recipe.write_text(block("yaml", "# example: notes"))
    load_recipe(recipe)
    shipped = yaml.safe_load((ROOT / "recipes" / "notes_qa.yaml").read_text())
    assert yaml.safe_load(recipe.read_text())["mcp_servers"] == shipped["mcp_servers"]
    result = CliRunner().invoke(app, ["check", "--connect", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "MCP server notes: 2 tool(s): list_notes, read_note" in result.output
    assert "MCP server notes: 2 tool(s): list_notes, read_note" in block("text")


def test_the_remote_example_loads_offline(tmp_path: Path) -> None:
    recipe = tmp_path / "remote.yaml"
    recipe.write_text(block("yaml", "# example: remote"))
    loaded = load_recipe(recipe)
    assert loaded.resolved.agents["triager"].mcp_tools == ["tracker.search_issues", "tracker.get_issue"]


def test_the_python_example_starts_calls_and_stops_its_server(tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(block("python"))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['calc.add']", "5"]


def test_the_readme_excerpt_is_the_shipped_recipe_and_its_model_mapping_loads(tmp_path: Path) -> None:
    section = (ROOT / "README.md").read_text().split("## Tools from MCP servers", 1)[1].split("\n## ", 1)[0]
    excerpt = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]
    shipped = yaml.safe_load((ROOT / "recipes" / "notes_qa.yaml").read_text())
    assert excerpt["mcp_servers"] == shipped["mcp_servers"]
    for key, value in excerpt["agents"]["librarian"].items():
        assert shipped["agents"]["librarian"][key] == value, key
    # the inline mapping of the prose is a model a recipe accepts
    mapping = re.search(r"`model: (\{.*?\})`", section, re.S).group(1)  # type: ignore[union-attr]
    recipe = tmp_path / "hosted.yaml"
    recipe.write_text(
        f"model: {' '.join(mapping.split())}\n"
        "types: {Q: {fields: {text: str}}, A: {fields: {text: str}}}\n"
        "agents: {a: {consumes: Q, publishes: A}}\n"
    )
    loaded = yaml.safe_load(recipe.read_text())["model"]
    assert loaded["rate_limit"] == {"requests_per_minute": 60, "tokens_per_minute": 20000}
    load_recipe(recipe)
