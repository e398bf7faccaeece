"""A board is chosen by one string everywhere: a SQLite path, ``:memory:`` or a postgresql:// URL,
from ``--board``, else ``FLOCK_BOARD``, else the recipe's ``settings.board``, else the default;
and a URL's password is never shown (flock_cli/store/locate.py, flock_cli/cli/common.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli.cli.app import app
from flock_cli.store.locate import is_database_url, open_store, redact

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
UNREACHABLE = "postgresql://u:secret@127.0.0.1:1/db"  # port 1: refused at once, nothing listens
runner = CliRunner()

RECIPE = """
    name: urls
    types:
      Job:
        fields: {n: int}
      Done:
        fields: {n: int}
    agents:
      worker:
        consumes: Job
        publishes: Done
        engine: test
"""


def flock(*args: str | Path, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], env=env, input=input)


def cli(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``flock ...`` as a real process, a Job on its stdin (``FLOCK_BOARD`` cleared unless ``env``
    sets it)."""
    base = {k: v for k, v in os.environ.items() if k != "FLOCK_BOARD"}
    return subprocess.run(
        [sys.executable, "-m", "flock_cli", *map(str, args)],
        cwd=cwd,
        env={**base, **(env or {})},
        input='{"n": 1}',
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE).lstrip())
    return path


def with_board_setting(recipe: Path, board: str) -> Path:
    text = recipe.read_text() + f"settings:\n  board: {json.dumps(board)}\n"
    other = recipe.with_name("with_board.yaml")
    other.write_text(text)
    return other


def publish(recipe: Path, n: int, *options: str, env: dict[str, str] | None = None) -> Any:
    result = flock(
        "publish", "Job", "-", "--recipe", recipe, *options, "--json", env=env, input=f'{{"n": {n}}}'
    )
    assert result.exit_code == 0, result.output
    return result


def numbers_on(board: Path | str, env: dict[str, str] | None = None, *options: str) -> list[int]:
    """The ``n`` of every Job on ``board`` (read with ``--board``, or without it when ``board`` is
    "" and ``env`` or ``options`` choose it)."""
    args = ["board", "list", "--json", *(["--board", str(board)] if board else []), *options]
    result = flock(*args, env=env)
    assert result.exit_code == 0, result.output
    return sorted(a["payload"]["n"] for a in json.loads(result.stdout)["artifacts"])


def one_line_error(out: str, err: str) -> str:
    """The single ``error: ...`` line a refused command prints, with nothing else around it."""
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out.strip() == ""
    return lines[0]


# -- precedence: --board, else FLOCK_BOARD, else settings.board, else the recipe's own board --------


def test_publish_and_board_follow_option_then_env_then_setting_then_default(
    recipe: Path, tmp_path: Path
) -> None:
    configured = with_board_setting(recipe, "setting.db")
    publish(recipe, 1)  # nothing given: the recipe's own board
    publish(configured, 2)  # settings.board
    publish(configured, 3, env={"FLOCK_BOARD": "env.db"})  # the environment beats the setting
    publish(configured, 4, "--board", "option.db", env={"FLOCK_BOARD": "env.db"})  # the option beats both
    publish(recipe, 5, env={"FLOCK_BOARD": "env.db"})  # and the recipe's default

    assert numbers_on(tmp_path / ".flock" / "urls.db") == [1]
    assert numbers_on(tmp_path / "setting.db") == [2]
    assert numbers_on(tmp_path / "env.db") == [3, 5]
    assert numbers_on(tmp_path / "option.db") == [4]
    # flock board reads the board FLOCK_BOARD names, before --recipe's and the one in .flock/
    assert numbers_on("", {"FLOCK_BOARD": "env.db"}) == [3, 5]
    assert numbers_on("", {"FLOCK_BOARD": "env.db"}, "--recipe", str(configured)) == [3, 5]
    assert numbers_on("", None, "--recipe", str(configured)) == [2]
    assert numbers_on("", None) == [1]  # the one board in .flock/
    assert numbers_on("option.db", {"FLOCK_BOARD": "env.db"}) == [4]


def test_run_uses_the_board_flock_board_names(recipe: Path, tmp_path: Path) -> None:
    configured = with_board_setting(recipe, "setting.db")
    (tmp_path / "job.json").write_text('{"n": 7}')
    result = flock("run", configured, "-i", "Job=job.json", "--json", env={"FLOCK_BOARD": "env.db"})
    assert result.exit_code == 0, result.output
    assert (tmp_path / "env.db").exists() and not (tmp_path / "setting.db").exists()
    listed = json.loads(flock("board", "list", "--board", "env.db", "--json").stdout)
    assert sorted(a["type"] for a in listed["artifacts"]) == ["Done", "Job"]


def test_flock_board_env_wins_over_several_boards_in_dot_flock(recipe: Path, tmp_path: Path) -> None:
    publish(recipe, 1)
    publish(recipe, 2, "--board", ".flock/other.db")
    several = flock("board", "list")
    assert several.exit_code == 2 and "or set FLOCK_BOARD" in several.stderr
    assert numbers_on("", {"FLOCK_BOARD": ".flock/other.db"}) == [2]


def test_a_missing_board_named_by_the_environment_says_so(recipe: Path) -> None:
    result = flock("board", "list", env={"FLOCK_BOARD": "nope.db"})
    assert result.exit_code == 2
    assert one_line_error(result.stdout, result.stderr) == "error: FLOCK_BOARD: no board at nope.db"
    assert not Path("nope.db").exists()


# -- what a board can be --------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["mysql://u:secret@h/db", "sqlite:///x.db", "file://x.db"])
def test_an_unsupported_scheme_is_refused_wherever_it_comes_from(recipe: Path, target: str) -> None:
    configured = with_board_setting(recipe, target)
    for args, env, origin in [
        (["board", "list", "--board", target], None, ""),
        (["board", "list"], {"FLOCK_BOARD": target}, "FLOCK_BOARD: "),
        (["publish", "Job", "-", "-r", recipe, "--board", target], None, ""),
        (["publish", "Job", "-", "-r", configured], None, f"settings.board of {configured}: "),
        (["run", recipe, "-i", "Job=-"], {"FLOCK_BOARD": target}, "FLOCK_BOARD: "),
    ]:
        result = flock(*args, env=env, input='{"n": 1}')
        assert result.exit_code == 2, result.output
        line = one_line_error(result.stdout, result.stderr)
        assert line.startswith(f"error: {origin}unsupported board {redact(target)}: ")
        assert "a SQLite file or a postgresql:// (or postgres://) URL" in line
        assert "secret" not in line
    assert sorted(p.name for p in Path().iterdir()) == ["r.yaml", "with_board.yaml"]  # nothing created


def test_a_driver_in_the_scheme_is_named_as_the_problem(recipe: Path) -> None:
    result = flock("board", "list", "--board", "postgresql+psycopg://u:secret@h/db")
    assert result.exit_code == 2
    assert one_line_error(result.stdout, result.stderr) == (
        "error: unsupported board postgresql+psycopg://u:***@h/db: a board is the path of a SQLite"
        " file or a postgresql:// (or postgres://) URL without a driver name"
    )


def test_what_names_a_database() -> None:
    assert is_database_url("postgresql://h/db") and is_database_url("postgres://h/db")
    assert is_database_url("PostgreSQL://h/db")  # schemes are case-insensitive
    assert not is_database_url("board.db") and not is_database_url(":memory:")
    assert not is_database_url("dir/with:colon.db") and not is_database_url("/abs/postgresql.db")


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("postgresql://u:secret@h:5432/db", "postgresql://u:***@h:5432/db"),
        (
            "postgres://u@h/db?password=secret&sslmode=require",
            "postgres://u@h/db?password=***&sslmode=require",
        ),
        ("postgresql://h/db?%70assword=secret", "postgresql://h/db?%70assword=***"),  # libpq decodes keys
        ("postgresql://:secret@h/db", "postgresql://:***@h/db"),
        ("postgresql://u:p%40ss@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        ("postgresql://u:se@cret@h/db", "postgresql://u:***@h/db"),  # an unescaped @ in the password
        ("postgresql://u:se/cret@h/db", "postgresql://u:***@h/db"),  # an unescaped / in the password
        ("postgresql://h/db?user=a@b&password=secret", "postgresql://h/db?user=a@b&password=***"),
        (
            "postgresql://h/db?password=se&cret&sslmode=require",
            "postgresql://h/db?password=***&sslmode=require",
        ),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
        (".flock/board.db", ".flock/board.db"),
        ("we:ird@name.db", "we:ird@name.db"),  # a path is shown as it is
    ],
)
def test_redact_hides_passwords_and_nothing_else(target: str, shown: str) -> None:
    assert redact(target) == shown


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("postgresql://u:s%zzecret@h/db", 'invalid percent-encoded token: "***"'),
        ("postgresql://u:secret@h:99999/db", "a port is not a number from 1 to 65535"),
        ("postgresql://u:secret@h:port/db", "a port is not a number from 1 to 65535"),
        ("postgresql://u:secret@h/db?colour=red", 'invalid URI query parameter: "***"'),
        ("postgresql://h/db?colour=red", 'invalid URI query parameter: "colour"'),  # no password to hide
        ("postgresql://u:secret@[::1/db", 'IPv6 host address in URI: "***"'),
        ("postgresql://u@h/db?password=se&cret", 'missing key/value separator "***"'),
        # what libpq reads differently from other URL parsers: refused, the password unread
        ("postgresql://u:sec#ret@h/db", "write '#' as %23"),
        ("postgresql://u:se/cret@h/db", "percent-encode '/', '?' and '@' in the user name and password"),
        ("postgresql://u:se?cret@h/db", "percent-encode '/', '?' and '@'"),
        ("postgresql://u:se@cret@h/db", "percent-encode '/', '?' and '@'"),
        ("postgresql://user@server:secret@h/db", "percent-encode '/', '?' and '@'"),
    ],
)
def test_a_malformed_url_is_one_line_without_its_password(recipe: Path, target: str, problem: str) -> None:
    result = flock("publish", "Job", "-", "-r", recipe, "--board", target, input='{"n": 1}')
    assert result.exit_code == 2
    line = one_line_error(result.stdout, result.stderr)
    assert line.startswith(f"error: malformed board URL {redact(target)}: ") and problem in line
    assert "cret" not in line  # no piece of the password either


def test_reading_commands_refuse_memory_and_missing_files(tmp_path: Path) -> None:
    from flock_cli.store.locate import NoBoardError

    with pytest.raises(NoBoardError, match="':memory:' holds no board to read"):
        open_store(":memory:", must_exist=True)
    with pytest.raises(NoBoardError, match="no board at"):
        open_store(str(tmp_path / "none.db"), must_exist=True)
    assert not (tmp_path / "none.db").exists()
    assert open_store(":memory:", must_exist=False).durable is False


# -- PostgreSQL: a real server, the extra, an unreachable server -------------------------------------

BLOCK_PSYCOPG = '''
import sys


class _NoPsycopg:
    """As if the postgres extra were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("psycopg", "psycopg_pool", "psycopg_binary", "psycopg_c"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoPsycopg())
'''


def test_without_the_postgres_extra_a_url_says_what_to_install(recipe: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "no_psycopg"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_PSYCOPG)
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")])}
    probe = subprocess.run(
        [sys.executable, "-c", "import psycopg"], env={**os.environ, **env}, capture_output=True, text=True
    )
    assert probe.returncode != 0 and "No module named 'psycopg'" in probe.stderr  # the blocker works
    for args in (
        ["board", "list", "--board", UNREACHABLE],
        ["publish", "Job", "-", "-r", recipe, "--board", UNREACHABLE],
        ["run", recipe, "-i", "Job=-", "--board", UNREACHABLE],
    ):
        done = cli(*args, cwd=tmp_path, env=env)
        assert done.returncode == 2, done.stderr
        line = one_line_error(done.stdout, done.stderr)
        assert line == (
            "error: the PostgreSQL board needs the postgres extra: pip install 'flock-flow[postgres]'"
            " (No module named 'psycopg')"
        )


def test_psycopg_is_imported_only_for_a_database_board(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        import flock_cli
        from flock_cli.cli import main
        main(["--help"])
        from flock_cli.store.locate import open_store
        open_store({str(tmp_path / "b.db")!r}, must_exist=False)
        print(sorted(m for m in sys.modules if m.startswith(("psycopg", "flock_cli.store.postgres"))),
              file=sys.stderr)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "[]"


@pytest.mark.parametrize(
    ("where", "url"),
    [
        ("option", UNREACHABLE),
        ("option", "postgresql://u@127.0.0.1:1/db?password=secret"),
        ("env", "postgresql://u:se%2Fcr%40et@127.0.0.1:1/db"),  # escaped: accepted, and hidden
    ],
)
def test_an_unreachable_server_is_one_line_without_the_password(
    recipe: Path, tmp_path: Path, where: str, url: str
) -> None:
    """Connecting happens inside the command's event loop: BoardUnavailableError comes out of
    asyncio.run and is reported like any usage error. The run's trace keeps the board without
    its password too."""
    traces = tmp_path / "traces.duckdb"
    board = ["--board", url] if where == "option" else []
    env = {"FLOCK_BOARD": url} if where == "env" else {}
    for args in (
        ["board", "list", *board],
        ["publish", "Job", "-", "-r", recipe, *board],
        ["run", recipe, "-i", "Job=-", "--traces", traces, *board],
    ):
        done = cli(*args, cwd=tmp_path, env={**env, "FLOCK_TRACES": ""})
        assert done.returncode == 2, done.stderr
        line = one_line_error(done.stdout, done.stderr)
        assert line.startswith(f"error: cannot reach the board {redact(url)}: "), line
        assert "cret" not in line and "se%2F" not in line
    exported = cli("trace", "export", "--all", "--traces", traces, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert "cret" not in exported.stdout and "se%2F" not in exported.stdout
    boards = {json.loads(line).get("attributes", {}).get("board") for line in exported.stdout.splitlines()}
    assert redact(url) in boards


def test_a_postgresql_board_by_url_through_the_cli(recipe: Path, tmp_path: Path, postgres_url: str) -> None:
    """The same commands on a PostgreSQL board, chosen by FLOCK_BOARD or --board. The test server
    trusts its clients, so the password is not checked; it must still never be shown."""
    url = postgres_url.replace("flock@", "flock:secret@", 1)
    env = {"FLOCK_BOARD": url}
    assert numbers_on("", env) == []  # a database without a board reads as an empty board
    shown = flock("publish", "Job", "-", "-r", recipe, env=env, input='{"n": 1}')
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.rstrip().endswith(f"to {redact(url)}") and "secret" not in shown.output
    (tmp_path / "job.json").write_text('{"n": 2}')
    ran = flock("run", recipe, "-i", "Job=job.json", "--json", env=env)
    assert ran.exit_code == 0, ran.output
    listed = json.loads(flock("board", "list", "--board", url, "--json").stdout)
    assert sorted(a["type"] for a in listed["artifacts"]) == ["Done", "Done", "Job", "Job"]  # both Jobs ran
    assert not list(tmp_path.rglob("*.db"))  # no SQLite board was made on the side
