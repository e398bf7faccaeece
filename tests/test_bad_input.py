"""Inputs found by fuzzing (issue 14, item 6): each used to end in a traceback, a hang, memory
exhaustion or a silent change of the data. Each must now end with exit 2 and one message that
names the place (file:line:column, or the type and field) and the limit it reached.

Most run in process through Typer's runner; the ones that used to hang or eat memory run as real
processes with a memory cap and a timeout, so a regression fails the test instead of the machine.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flock_cli.cli.app import app

runner = CliRunner()

BASE = """
name: base
types:
  Note:
    fields:
      text: str
      extra: {type: any, optional: true}
  Out:
    fields:
      text: str
agents:
  a:
    consumes: Note
    publishes: Out
    engine: test
"""


def flock(*args: str | Path, input: str | None = None) -> Any:
    return runner.invoke(app, [str(a) for a in args], input=input)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip() if text.startswith("\n") else text)
    return path


def one_error(result: Any, *fragments: str) -> str:
    """The output of a command that failed as a user error: exit 2, no traceback, one message
    (``error: ...``, or loader diagnostics ending in ``N error(s)``) holding ``fragments``."""
    out = result.output
    assert result.exit_code == 2, out
    assert "Traceback" not in out
    assert result.exception is None or isinstance(result.exception, SystemExit)
    headlines = [line for line in out.splitlines() if re.match(r"^(error: |\S+:\d+:\d+: error: )", line)]
    assert len(headlines) == 1, out
    for fragment in fragments:
        assert fragment in out, out
    return out


def capped(args: list[str], *, cwd: Path, timeout: float = 90, memory_gb: float = 2.0, **kw: Any) -> Any:
    """``flock args`` as a real process with an address-space cap: a regression to the old
    behaviour (filling memory, never exiting) fails here instead of taking the machine down."""
    limit = int(memory_gb * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "FLOCK_TRACES": "off"}
    return subprocess.run(
        [sys.executable, "-m", "flock_cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap,
        env=env,
        **kw,
    )


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "base.yaml", BASE)


# -- reading files ---------------------------------------------------------------------------------


def test_include_of_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", "include: /dev/zero\n" + BASE)
    out = one_error(flock("validate", recipe), "r.yaml:1:10:", "/dev/zero is a device or socket")
    assert "MemoryError" not in out


def test_publish_of_dev_zero_is_refused_without_reading_it(base: Path, tmp_path: Path) -> None:
    board = tmp_path / "b.db"
    one_error(flock("publish", "Note", "/dev/zero", "-r", base, "--board", board), "/dev/zero is a device")
    one_error(
        flock("run", base, "--engine", "test", "--board", ":memory:", "--input", "Note=/dev/zero"),
        "--input Note: payload file /dev/zero is a device",
    )


def test_a_payload_file_over_the_size_limit_is_refused(base: Path, tmp_path: Path) -> None:
    from flock_cli.limits import MAX_PAYLOAD_BYTES

    big = tmp_path / "big.json"
    big.write_text('{"text": "' + "x" * MAX_PAYLOAD_BYTES + '"}')
    one_error(
        flock("run", base, "--engine", "test", "--board", ":memory:", "--input", f"Note={big}"),
        "is larger than 16 MiB, the limit",
    )
    one_error(
        flock(
            "run", base, "--engine", "test", "--board", ":memory:", "--input", "Note=-", input=big.read_text()
        ),
        "standard input is larger than 16 MiB",
    )


def test_a_recipe_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    from flock_cli.limits import MAX_RECIPE_BYTES

    recipe = write(tmp_path / "r.yaml", BASE + "#" + "x" * MAX_RECIPE_BYTES + "\n")
    one_error(flock("validate", recipe), "is larger than 4 MiB, the limit")


def test_a_payload_from_a_pipe_is_read_and_an_include_of_a_pipe_refused(base: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "note.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text('{"text": "from a pipe"}'))
    writer.start()
    result = flock(
        "run", base, "--engine", "test", "--board", ":memory:", "--input", f"Note={fifo}", "--json"
    )
    writer.join(10)
    assert result.exit_code == 0, result.output
    recipe = write(tmp_path / "r.yaml", f"include: {fifo}\n" + BASE)
    # No writer: opening the pipe would wait forever. Should anything open it, this thread lets it
    # go after a few seconds (it reads nothing), so a regression fails instead of hanging.
    release = threading.Thread(target=_open_for_writing_if_read, args=(fifo, 5.0), daemon=True)
    release.start()
    one_error(flock("validate", recipe), "is a pipe, not a regular file")


def _open_for_writing_if_read(fifo: Path, seconds: float) -> None:
    import errno
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # succeeds only while a reader waits
            return
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                return
        time.sleep(0.1)


def test_an_include_path_with_a_nul_byte(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", 'include: "a\\0b.yaml"\n' + BASE)
    one_error(flock("validate", recipe), "r.yaml:1:10:", "not a valid file path (it holds a NUL byte)")


def test_a_missing_file_and_a_directory_are_user_errors(base: Path, tmp_path: Path) -> None:
    one_error(flock("validate", tmp_path), "is a directory")
    one_error(flock("run", base, "--board", ":memory:", "--input", f"Note={tmp_path}"), "is a directory")


# -- nesting ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [490, 999])
def test_yaml_nested_hundreds_of_levels(tmp_path: Path, depth: int) -> None:
    recipe = write(tmp_path / "r.yaml", BASE + "description: " + "[" * depth + "]" * depth + "\n")
    one_error(flock("validate", recipe), "r.yaml:15:", "nests more than 64 levels deep here (the limit)")


def test_yaml_nested_past_libyaml_s_own_limit(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", BASE + "description: " + "[" * 5000 + "]" * 5000 + "\n")
    one_error(flock("validate", recipe), "r.yaml:15:", "YAML syntax error")


def test_a_chain_of_500_types(tmp_path: Path) -> None:
    lines = ["types:"] + [
        f"  T{i}: {{fields: {{x: {f'T{i + 1}' if i < 499 else 'str'}}}}}" for i in range(500)
    ]
    recipe = write(
        tmp_path / "r.yaml", "\n".join([*lines, "agents: {a: {consumes: T0, engine: test}}"]) + "\n"
    )
    result = flock("validate", recipe)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "types nest more than 32 levels deep here (T0 -> T1 -> T2 -> ... -> T31 -> T32" in result.output


def test_a_chain_of_31_types_is_fine(tmp_path: Path) -> None:
    lines = ["types:"] + [f"  T{i}: {{fields: {{x: {f'T{i + 1}' if i < 30 else 'str'}}}}}" for i in range(31)]
    recipe = write(
        tmp_path / "r.yaml", "\n".join([*lines, "agents: {a: {consumes: T0, engine: test}}"]) + "\n"
    )
    assert flock("validate", recipe).exit_code == 0


def test_a_type_built_on_a_deep_type_declared_later_is_measured_too(tmp_path: Path) -> None:
    lines = ["types:"] + [
        f"  T{i}: {{fields: {{x: {f'T{i + 1}' if i < 39 else 'str'}}}}}" for i in range(39, -1, -1)
    ]
    recipe = write(
        tmp_path / "r.yaml", "\n".join([*lines, "agents: {a: {consumes: T0, engine: test}}"]) + "\n"
    )
    one_error(
        flock("validate", recipe), "types nest more than 32 levels deep here ('T8' nests 32 levels, in 'T7'"
    )


def test_list_nested_1000_deep(tmp_path: Path) -> None:
    field_type = "list[" * 1000 + "str" + "]" * 1000
    recipe = write(
        tmp_path / "r.yaml", BASE.replace("text: str\n      extra", f'deep: "{field_type}"\n      extra', 1)
    )
    one_error(flock("validate", recipe), "r.yaml:", "nests list[...] and dict[...] more than 32 levels deep")


@pytest.mark.parametrize("operator", ["and", "or", "+", "*"])
@pytest.mark.parametrize("count", [200, 330])
def test_a_where_of_hundreds_of_chained_operators(tmp_path: Path, operator: str, count: int) -> None:
    where = f" {operator} ".join(["text"] * count)
    recipe = write(
        tmp_path / "r.yaml", BASE.replace("consumes: Note", f'consumes: {{types: Note, where: "{where}"}}')
    )
    out = one_error(flock("validate", recipe), "r.yaml:12:", "where expression is nested too deeply")
    assert "SyntaxError" not in out and "RecursionError" not in out


@pytest.mark.parametrize("operator", ["~", "=="])
def test_operators_that_chain_flat_stay_valid_however_long(base: Path, tmp_path: Path, operator: str) -> None:
    """Jinja reads a ~ b ~ c and a == b == c as one node: 330 of them nest nothing."""
    where = f" {operator} ".join(["text"] * 330)
    recipe = write(
        tmp_path / "r.yaml", BASE.replace("consumes: Note", f'consumes: {{types: Note, where: "{where}"}}')
    )
    payload = write(tmp_path / "p.json", '{"text": "x"}')
    result = flock(
        "run", recipe, "--engine", "test", "--board", ":memory:", "--input", f"Note={payload}", "--json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["runs_by_agent"] == {"a": 1}


@pytest.mark.parametrize(
    "where",
    [
        "text | lower" * 1 + " | lower" * 60,
        "text" + ".lower()" * 60,
        "[" * 60 + "text" + "]" * 60,
        "payload" + "['text']" * 60,
        "(text if text else " * 60 + "text" + ")" * 60,
        "not " * 60 + "text",
    ],
)
def test_every_kind_of_deep_expression_is_refused_at_load_time(tmp_path: Path, where: str) -> None:
    recipe = write(
        tmp_path / "r.yaml", BASE.replace("consumes: Note", f'consumes: {{types: Note, where: "{where}"}}')
    )
    one_error(flock("validate", recipe), "where expression is nested too deeply: more than 50 levels")


def test_expressions_at_the_depth_limit_compile_in_every_shape() -> None:
    """50 levels is the limit because Python compiles what Jinja makes of 50 levels of any kind."""
    from pydantic import BaseModel

    from flock_cli.recipe.expressions import compile_expression

    class Note(BaseModel):
        text: str

    for where in [
        " and ".join(["text"] * 50),
        " ~ ".join(["text"] * 50),
        "text" + " | lower" * 49,
        "text" + ".lower()" * 24,
        "[" * 49 + "text" + "]" * 49,
        "(text if text else " * 24 + "text" + ")" * 24,
        "not " * 49 + "text",
    ]:
        compile_expression(where, ["text"])(Note(text="x"))


# -- payloads --------------------------------------------------------------------------------------


def run_with(base: Path, tmp_path: Path, name: str, text: str) -> Any:
    payload = write(tmp_path / name, text)
    return flock("run", base, "--engine", "test", "--board", ":memory:", "--input", f"Note={payload}")


def test_a_lone_surrogate_as_a_key_in_an_any_field(base: Path, tmp_path: Path) -> None:
    result = run_with(base, tmp_path, "p.json", '{"text": "x", "extra": {"\\ud800": 1}}')
    one_error(result, "Invalid payload for type 'Note': extra.\\ud800: this key is not text")


def test_a_lone_surrogate_in_a_string(base: Path, tmp_path: Path) -> None:
    one_error(
        run_with(base, tmp_path, "p.json", '{"text": "\\udcff"}'), "'Note': text: it holds a lone surrogate"
    )
    one_error(run_with(base, tmp_path, "q.json", '{"text": "x", "extra": ["\\ud800"]}'), "'Note': extra.0:")


def test_an_any_field_nested_900_deep(base: Path, tmp_path: Path) -> None:
    result = run_with(base, tmp_path, "p.json", '{"text": "x", "extra": ' + "[" * 900 + "]" * 900 + "}")
    one_error(result, "'Note': extra.0.0.0", "nested more than 100 levels deep (the limit)")


def test_json_nested_past_the_parser_s_recursion(base: Path, tmp_path: Path) -> None:
    result = run_with(
        base, tmp_path, "p.json", '{"text": "x", "extra": ' + "[" * 100_000 + "]" * 100_000 + "}"
    )
    one_error(result, "nested too deeply to read")


@pytest.mark.parametrize(
    ("name", "text", "field"),
    [
        ("nan.json", '{"text": "x", "extra": NaN}', "extra"),
        ("inf.json", '{"text": "x", "extra": [1, Infinity]}', "extra.1"),
        ("ninf.json", '{"text": "x", "extra": {"low": -Infinity}}', "extra.low"),
        ("nan.yaml", "text: x\nextra: .nan\n", "extra"),
        ("inf.yaml", "text: x\nextra: [-.inf]\n", "extra.0"),
    ],
)
def test_nan_and_infinity_in_an_any_field_are_refused(
    base: Path, tmp_path: Path, name: str, text: str, field: str
) -> None:
    """They were stored as null with exit 0: a silent change of the data. JSON has no NaN."""
    one_error(run_with(base, tmp_path, name, text), f"'Note': {field}: NaN and infinity are not allowed")


def test_nan_is_refused_by_publish_and_nothing_is_written(base: Path, tmp_path: Path) -> None:
    board = tmp_path / "b.db"
    payload = write(tmp_path / "p.json", '[{"text": "fine"}, {"text": "x", "extra": NaN}]')
    one_error(
        flock("publish", "Note", payload, "-r", base, "--board", board),
        f"item 2 of 2 in {payload}: Invalid payload for type 'Note': extra: NaN",
    )
    assert not board.exists() or "fine" not in flock("board", "list", "--board", board).output


def test_a_non_string_key_in_a_yaml_payload(base: Path, tmp_path: Path) -> None:
    one_error(
        run_with(base, tmp_path, "p.yaml", "text: x\nextra: {1: one}\n"),
        "'Note': extra.1: keys must be strings",
    )


async def test_the_python_api_refuses_nan_and_infinity_too() -> None:
    """Python models' float fields take NaN unless told otherwise; stored, it became null."""
    from pydantic import BaseModel

    from flock_cli import Flock, flock_type
    from flock_cli.errors import InvalidPayloadError

    @flock_type(name="Loose")
    class Loose(BaseModel):
        value: Any = None
        number: float = 0.0

    flock_ = Flock()
    flock_.register_type(Loose)
    with pytest.raises(InvalidPayloadError, match=re.escape("'Loose': value.a: NaN and infinity")):
        await flock_.publish_external("Loose", {"value": {"a": float("nan")}})
    with pytest.raises(InvalidPayloadError, match="'Loose': number: NaN"):
        await flock_.publish(Loose(number=float("inf")))
    assert await flock_.store.list() == []


async def test_an_agent_output_holding_nan_fails_the_run_and_is_not_stored() -> None:
    from pydantic import BaseModel

    from flock_cli import Flock, FunctionEngine, flock_type

    @flock_type(name="Src")
    class Src(BaseModel):
        n: int

    @flock_type(name="Dst")
    class Dst(BaseModel):
        value: Any

    flock_ = Flock()
    flock_.agent("maker").consumes(Src).publishes(Dst).with_engines(
        FunctionEngine(lambda inputs: [Dst(value=[float("nan")])])
    )
    await flock_.publish(Src(n=1))
    summary = await flock_.run_until_idle()
    assert not summary.ok
    assert "value.0: NaN and infinity are not allowed" in str(summary.failures[0])
    assert [a.type for a in await flock_.store.list()] == ["Src"]


def test_a_yaml_alias_bomb_inside_a_payload(base: Path, tmp_path: Path) -> None:
    """543 bytes that expand to 387 million values: the run filled memory and never exited."""
    lines = ["text: x", "extra:", '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"  {name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = write(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    assert len(bomb.read_bytes()) < 600
    done = capped(
        ["run", str(base), "--engine", "test", "--board", ":memory:", "--input", f"Note={bomb}"], cwd=tmp_path
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "Invalid payload for type 'Note': extra." in done.stderr
    assert "more than 1,000,000 values (the limit" in done.stderr


# -- expressions at run time -----------------------------------------------------------------------


def test_a_memory_bomb_in_a_where_is_a_failed_predicate(base: Path, tmp_path: Path) -> None:
    """It passed the load-time checks and built 3 GB and more at run time."""
    where = "(['a' * 100000] * 100000) | string"
    recipe = write(
        tmp_path / "r.yaml", BASE.replace("consumes: Note", f'consumes: {{types: Note, where: "{where}"}}')
    )
    payload = write(tmp_path / "p.json", '{"text": "hi"}')
    done = capped(
        [
            "run",
            str(recipe),
            "--engine",
            "test",
            "--board",
            ":memory:",
            "--input",
            f"Note={payload}",
            "--json",
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert summary["runs_by_agent"] == {}
    [error] = summary["predicate_errors"]
    assert "would build more than 10,000,000 characters or items (the limit)" in error["error"]


# -- flock trace sql -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Path:
    from tests.trace_seed import seed

    return seed(tmp_path / "traces.duckdb")


def test_trace_sql_stops_a_query_that_would_run_forever(store: Path) -> None:
    query = "SELECT count(*) FROM range(1000000) a, range(1000000) b, range(1000000) c"
    result = flock("trace", "sql", query, "--traces", store, "--timeout", "1")
    one_error(result, "the query ran longer than 1 s and was stopped (--timeout")


def test_trace_sql_stops_a_query_past_its_memory_limit(store: Path) -> None:
    query = "SELECT list(range) FROM range(100000000)"
    result = flock("trace", "sql", query, "--traces", store, "--memory-limit", "50MB")
    one_error(result, "the query needed more than 50MB of memory and was stopped (--memory-limit)")


def test_trace_sql_refuses_a_result_too_large(store: Path) -> None:
    result = flock("trace", "sql", "SELECT * FROM range(1000000)", "--traces", store)
    one_error(result, "returned more than 100,000 rows (--max-rows)")
    big = flock(
        "trace", "sql", "SELECT repeat('x', 20000000) AS s", "--traces", store, "--memory-limit", "10MB"
    )
    one_error(big, "result is larger than 10MB (--memory-limit)")
    assert (
        flock("trace", "sql", "SELECT * FROM range(5)", "--traces", store, "--max-rows", "5").exit_code == 0
    )


def test_trace_sql_limits_cannot_be_lifted_by_the_query(store: Path) -> None:
    result = flock("trace", "sql", "SET memory_limit = '100GB'", "--traces", store)
    one_error(result, "query failed:", "the configuration has been locked")
    one_error(
        flock("trace", "sql", "SELECT 1", "--traces", store, "--memory-limit", "lots"), "--memory-limit takes"
    )


# -- found by the fuzz tests (tests/test_fuzz_inputs.py) ---------------------------------------------


def test_a_control_character_in_a_key_is_quoted_escaped_on_one_line(tmp_path: Path) -> None:
    recipe = write(tmp_path / "r.yaml", 'name: x\n"\\x1e": null\n')
    result = flock("validate", recipe)
    one_error(result, "error: unknown key '\\x1e'")
    assert "\x1e" not in result.output


def test_a_character_yaml_refuses_is_placed_on_its_line(tmp_path: Path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(b'name: x\ndescription: "a\x1cb"\ntypes: {}\n')
    out = one_error(
        flock("validate", recipe), "r.yaml:2:16: error: YAML error: unacceptable character #x001c"
    )
    assert '  2 | description: "a\\x1cb"' in out


def test_a_yaml_payload_error_is_one_placed_line(base: Path, tmp_path: Path) -> None:
    result = run_with(base, tmp_path, "p.json", ':{"text": "x"}\n')
    one_error(
        result, "p.json:1:", "invalid JSON or YAML: did not find expected key (while parsing a block mapping)"
    )
    assert len(result.stderr.strip().split("\n")) == 1


@pytest.mark.parametrize(
    ("content", "message"), [(None, "is a device"), (b"\x8b\x00\xff", "cannot read recording")]
)
def test_a_recording_that_is_no_text_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    """--replay-from /dev/zero read until memory ran out; a binary file was a UnicodeDecodeError."""
    recipes = Path(__file__).resolve().parent.parent / "recipes"
    recording = Path("/dev/zero") if content is None else tmp_path / "rec.jsonl"
    if content is not None:
        recording.write_bytes(content)
    args = ["run", recipes / "pipeline.yaml", "--board", ":memory:", "--replay-from", recording]
    one_error(flock(*args, "--input", f"Idea={recipes / 'inputs' / 'idea.json'}"), message)


def test_a_diagnostic_on_line_100_shows_its_position_not_an_emoji(tmp_path: Path) -> None:
    """Rich read ":100:" in "r.yaml:100:25" as an emoji code and printed 💯."""
    recipe = write(tmp_path / "r.yaml", "name: x\n" + "\n" * 98 + "types: {A: {fields: {n: nope}}}\n")
    out = one_error(flock("validate", recipe), "r.yaml:100:25: error: unknown field type 'nope'")
    assert "\N{HUNDRED POINTS SYMBOL}" not in out


def test_a_payload_key_with_a_line_break_stays_one_line(base: Path, tmp_path: Path) -> None:
    result = run_with(base, tmp_path, "p.json", '{"text": "x", "\\n": 1}')
    one_error(result, "error: Invalid payload for type 'Note': \\n: Extra inputs are not permitted")
    assert len(result.stderr.strip().split("\n")) == 1


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ("null", "null"),
        ('"text"', "a string"),
        ("7", "a number (7)"),
        ('[{"text": "a"}, true]', "a boolean (true)"),
    ],
)
def test_a_payload_that_is_not_an_object_is_named_in_json_words(
    base: Path, tmp_path: Path, payload: str, kind: str
) -> None:
    # it said "got NoneType", "got str": Python's names for what the user wrote as JSON
    where = " (item 1)" if payload.startswith("[") else ""
    file = write(tmp_path / "p.json", payload)
    out = one_error(flock("publish", "Note", file, "-r", base, "--board", tmp_path / "b.db"))
    assert f"{file}{where} must hold a JSON object, got {kind}" in out


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("p.json", '{"text": "a", "text": "b"}', "the key 'text' is written twice in one object"),
        (
            "p.json",
            '[{"text": "a"}, {"text": "b", "extra": {"k": 1, "k": 2}}]',
            "the key 'k' is written twice",
        ),
        ("p.yaml", "text: a\nextra: 1\ntext: b\n", "line 3: the key 'text' is written twice in one mapping"),
    ],
)
def test_a_key_written_twice_in_a_payload_is_refused_not_the_last_kept(
    base: Path, tmp_path: Path, name: str, text: str, problem: str
) -> None:
    board = tmp_path / "b.db"
    file = write(tmp_path / name, text)
    one_error(flock("publish", "Note", file, "-r", base, "--board", board), f"{file}: {problem}")
    assert not board.exists() or "0 artifacts" in flock("board", "list", "--board", board).output


def test_a_yaml_payload_may_merge_keys_and_override_them(base: Path, tmp_path: Path) -> None:
    file = write(tmp_path / "p.yaml", "- &n {text: a, extra: 1}\n- {<<: *n, text: b}\n")
    done = flock("publish", "Note", file, "-r", base, "--board", tmp_path / "b.db", "--json")
    assert done.exit_code == 0, done.output
