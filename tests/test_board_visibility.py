"""``flock board ... --as NAME``: an operator reads the board as an agent or tenant would."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli.cli.app import app
from flock_cli.store.sqlite import SQLiteBlackboardStore

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "multi_tenant.yaml"
REQUESTS = ROOT / "recipes" / "inputs" / "support_requests.json"
runner = CliRunner()


def flock(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """A board after the multi-tenant recipe ran: public requests, tenant cases, labelled
    escalations, private resolutions."""
    path = tmp_path / "board.db"
    ran = flock(
        "run", RECIPE, "--engine=test", f"--board={path}", "-i", f"SupportRequest={REQUESTS}", "--quiet"
    )
    assert ran.exit_code == 0, ran.output
    return path


def listed(board: Path, *args: str) -> dict[str, Any]:
    result = flock("board", "list", "--board", board, "--recipe", RECIPE, "--json", *args)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_as_an_agent_of_the_recipe_lists_what_its_board_view_sees(board: Path) -> None:
    everything = listed(board)
    assert everything["viewer"] is None  # no --as: the operator, unrestricted
    kinds = {a["id"]: a["visibility"] for a in everything["artifacts"]}
    assert {v["kind"] for v in kinds.values()} == {"Public", "Tenant", "Labelled", "Private"}

    result = flock("board", "list", "--board", board, "--recipe", RECIPE, "--as", "acme_analyst", "--json")
    assert result.exit_code == 0, result.output
    # The identity is taken from the recipe, and the command says so.
    assert "agent 'acme_analyst'" in result.stderr and "tenant acme" in result.stderr
    acme = json.loads(result.stdout)
    assert acme["viewer"] == {"name": "acme_analyst", "tenant": "acme", "labels": []}
    wanted = {
        i for i, v in kinds.items() if v["kind"] == "Public" or v == {"kind": "Tenant", "tenant_id": "acme"}
    }
    assert {a["id"] for a in acme["artifacts"]} == wanted and acme["total"] == len(wanted)

    officer = listed(board, "--as", "compliance_officer")
    assert officer["viewer"]["labels"] == ["compliance"]
    assert {a["visibility"]["kind"] for a in officer["artifacts"]} == {"Public", "Labelled", "Private"}

    # The reads went through the store's visibility checks: what was refused is recorded, as an
    # agent's refused reads are.
    async def denied() -> set[str]:
        store = SQLiteBlackboardStore(board)
        try:
            return {d.viewer for d in await store.denials() if d.where == "read"}
        finally:
            await store.close()

    assert {"acme_analyst", "compliance_officer"} <= asyncio.run(denied())


def test_an_unknown_name_is_an_outside_identity_with_the_tenant_and_labels_given(board: Path) -> None:
    result = flock("board", "list", "--board", board, "--recipe", RECIPE, "--as", "acme_analist", "--json")
    assert result.exit_code == 0
    assert "not an agent of" in result.stderr and "Did you mean 'acme_analyst'?" in result.stderr
    assert {a["visibility"]["kind"] for a in json.loads(result.stdout)["artifacts"]} == {"Public"}
    globex = listed(board, "--as", "auditor", "--tenant", "globex", "--label", "compliance", "--label", "x")
    assert globex["viewer"] == {"name": "auditor", "tenant": "globex", "labels": ["compliance", "x"]}
    seen = {(a["visibility"]["kind"], a["visibility"].get("tenant_id")) for a in globex["artifacts"]}
    assert seen == {("Public", None), ("Tenant", "globex"), ("Labelled", None)}
    # Without the recipe, the name is just a name: no tenant or labels are looked up.
    bare = flock("board", "list", "--board", board, "--as", "acme_analyst", "--json")
    assert {a["visibility"]["kind"] for a in json.loads(bare.stdout)["artifacts"]} == {"Public"}


def test_show_and_lineage_as_an_identity(board: Path) -> None:
    everything = listed(board)["artifacts"]
    request = next(
        a for a in everything if a["type"] == "SupportRequest" and a["payload"]["customer"] == "acme"
    )
    globex_case = next(a for a in everything if a["visibility"] == {"kind": "Tenant", "tenant_id": "globex"})

    def lineage(*args: str) -> dict[str, Any]:
        result = flock("board", "lineage", request["id"][:8], "--board", board, "-r", RECIPE, "--json", *args)
        assert result.exit_code == 0, result.output
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    assert [a["type"] for a in lineage()["children"]] == ["Case", "Escalation", "Resolution"]
    assert [a["type"] for a in lineage("--as", "acme_analyst")["children"]] == ["Case"]
    assert [a["type"] for a in lineage("--as", "compliance_officer")["children"]] == [
        "Escalation",
        "Resolution",
    ]
    assert lineage("--as", "globex_analyst")["children"] == []
    tree = flock("board", "lineage", request["id"], "--board", board, "-r", RECIPE, "--as", "acme_analyst")
    assert "led to (1)" in tree.stdout

    shown = flock(
        "board", "show", globex_case["id"][:8], "--board", board, "-r", RECIPE, "--as", "globex_analyst"
    )
    assert shown.exit_code == 0 and "Tenant(globex)" in shown.stdout
    hidden = flock("board", "show", globex_case["id"], "--board", board, "-r", RECIPE, "--as", "acme_analyst")
    assert hidden.exit_code == 1
    assert "acme_analyst may not see artifact" in hidden.stderr and "Tenant(globex)" in hidden.stderr
    assert hidden.stdout == "" and "Traceback" not in hidden.output
    of_hidden = flock(
        "board", "lineage", globex_case["id"], "--board", board, "-r", RECIPE, "--as", "acme_analyst"
    )
    assert of_hidden.exit_code == 1 and "may not see" in of_hidden.stderr


def test_an_embargo_hides_an_artifact_until_it_lifts(tmp_path: Path) -> None:
    board = tmp_path / "board.db"
    recipe = ROOT / "recipes" / "pipeline.yaml"
    for visibility in ("public", "after:1h"):
        published = flock(
            "publish", "Idea", REQUESTS.parent / "idea.json", "-r", recipe, "--board", board,
            "--visibility", visibility, "--json",
        )  # fmt: skip
        assert published.exit_code == 0, published.output
    everyone = json.loads(flock("board", "list", "--board", board, "--json").stdout)["artifacts"]
    assert len(everyone) == 2
    seen = json.loads(flock("board", "list", "--board", board, "--as", "anyone", "--json").stdout)
    assert [a["visibility"]["kind"] for a in seen["artifacts"]] == ["Public"]
    embargoed = next(a for a in everyone if a["visibility"]["kind"] == "After")
    hidden = flock("board", "show", embargoed["id"], "--board", board, "--as", "anyone")
    assert hidden.exit_code == 1 and "After(" in hidden.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tenant", "acme"], "--tenant and --label describe the identity given by --as NAME"),
        (["--label", "compliance"], "add --as"),
        (["--as", ""], "--as takes an identity name"),
        (["--as", " acme_analyst"], "without spaces around it"),
        (["--as", "bob", "--tenant", ""], "--tenant takes a tenant id"),
        (["--as", "bob", "--label", ""], "--label takes a label"),
        (["--as", "acme_analyst", "--tenant", "globex"], "its identity comes from the recipe (tenant acme"),
    ],
)
def test_an_invalid_identity_is_refused(board: Path, args: list[str], message: str) -> None:
    for command in (["list"], ["show", "0000"], ["lineage", "0000"]):
        result = flock("board", *command, "--board", board, "--recipe", RECIPE, *args)
        assert result.exit_code == 2, (command, result.output)
        assert message in result.stderr and "Traceback" not in result.output
        assert result.stderr.count("error:") == 1


def test_help_says_reads_are_unrestricted_without_as() -> None:
    text = " ".join(flock("board", "--help").stdout.split())
    assert "unrestricted" in text and "--as NAME" in text
    listing = " ".join(flock("board", "list", "--help").stdout.split())
    assert "--as" in listing and "--tenant" in listing and "--label" in listing
