"""Fuzzing what users hand the command line: recipes and payloads, mutated as text and as data.

Seeds are the example recipes (recipes/ and every complete recipe in docs/recipes.md) and the
example inputs (recipes/inputs/). Hypothesis mutates them: as text (tokens YAML and expressions
care about inserted, ranges deleted, duplicated or swapped, bytes that are not UTF-8) and as
data (a value anywhere replaced by another value, a nested one, a huge or a deep one; keys
added, renamed or removed). Then ``flock validate``, ``flock publish`` and ``flock run --engine
test --board :memory:`` must end with exit 0 or 2 (and 1 for a run whose agents fail), never a
traceback, and when they fail, with one error message in one of the shapes the CLI uses.

In CI the examples are few and derandomized, so a run is deterministic and takes well under a
minute. For longer fuzzing, locally::

    FLOCK_FUZZ=long FLOCK_FUZZ_SCALE=50 pytest tests/test_fuzz_inputs.py -p no:randomly

``FLOCK_FUZZ=long`` draws fresh random examples (and keeps the failures Hypothesis finds in its
example database), ``FLOCK_FUZZ_SCALE`` multiplies the number of examples of every test.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from flock_cli.cli.app import app

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
DOC = ROOT / "docs" / "recipes.md"
runner = CliRunner()

LONG = os.environ.get("FLOCK_FUZZ", "ci") == "long"
SCALE = int(os.environ.get("FLOCK_FUZZ_SCALE", "50" if LONG else "1"))


def fuzz(examples: int) -> settings:
    """Settings for one fuzz test: ``examples`` in CI (derandomized: the same every run)."""
    return settings(
        max_examples=examples * SCALE,
        derandomize=not LONG,
        deadline=None,
        database=None if not LONG else settings.default.database,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,  # the autouse environment fixtures: constant
        ],
        print_blob=True,
    )


# -- seeds -----------------------------------------------------------------------------------------

# the recipe of each example input, and the type it is published as (tests/test_recipe_examples.py)
INPUTS = {
    "idea.json": ("pipeline.yaml", "Idea"),
    "code_submission.json": ("code_review.yaml", "CodeSubmission"),
    "breaking_news.json": ("news_agency.yaml", "BreakingNews"),
    "support_requests.json": ("ticket_routing.yaml", "SupportRequest"),
    "brief.json": ("feedback_loop.yaml", "Brief"),
    "tenant_requests.json": ("multi_tenant.yaml", "SupportRequest"),
    "log_events.json": ("batch_summary.yaml", "LogEvent"),
    "topics.json": ("live_demo.yaml", "Topic"),
}
SLOW = {"live_demo.yaml"}  # simulated model latency of seconds: published, never run here


def _doc_blocks() -> tuple[list[str], dict[str, str]]:
    """The complete recipes of docs/recipes.md, and the support files they use."""
    fence = re.compile(r"^```(\w+)\n(.*?)^```\n", re.S | re.M)
    recipes, files = [], {}
    for lang, body in fence.findall(DOC.read_text(encoding="utf-8")):
        if lang == "yaml" and body.startswith("# recipe\n"):
            recipes.append(body)
        elif lang in ("yaml", "py") and body.startswith("# file: "):
            files[body.split("\n", 1)[0].removeprefix("# file: ").strip()] = body
    return recipes, files


DOC_RECIPES, DOC_FILES = _doc_blocks()
SEEDS = [(f"recipes/{p.name}", p.read_text(encoding="utf-8")) for p in sorted(RECIPES.glob("*.yaml"))] + [
    (f"docs/{i}", body) for i, body in enumerate(DOC_RECIPES)
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """recipes/ copied (includes, Python modules and inputs beside the recipes), and a docs/
    folder with the documentation's support files."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(RECIPES, root / "recipes")
    for name, body in DOC_FILES.items():
        path = root / "docs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
    return root


# -- what the CLI may answer -----------------------------------------------------------------------

# Top-level lines a failing command may write to stderr: one `error: ...`, or the loader's
# diagnostics (file:line:col: severity: ..., a severity alone when the problem has no place) and
# their count. Indented lines are the diagnostics' source lines, carets and hints.
_SHAPES = re.compile(
    r"^(error: .*"
    r"|.+:\d+:\d+: (error|warning|info): .*"
    r"|(error|warning|info): .*"
    r"|.+: \d+ errors?)$"
)


def check(result: Any, allowed: set[int], what: str) -> None:
    """The command ended as a user sees it should: an allowed exit code, no traceback, and on
    exit 2 one error message in one of the CLI's shapes."""
    context = f"{what}\n--- exit {result.exit_code}\n{result.output[-3000:]}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}\n{context}")
    assert result.exit_code in allowed, context
    assert "Traceback" not in result.output, context
    if result.exit_code == 2:
        top = [line for line in result.stderr.split("\n") if line and not line.startswith(" ")]
        assert top, context
        assert all(_SHAPES.match(line) for line in top), context
        assert sum(line.startswith("error: ") for line in top) <= 1, context
        assert any(re.match(r"^(error: |.+:\d+:\d+: error: )", line) for line in top), context


def flock(*args: str | Path) -> Any:
    return runner.invoke(app, [str(a) for a in args])


# -- mutations -------------------------------------------------------------------------------------

TOKENS = [
    ":", ": ", " ", "\n", "\n  ", "- ", "{", "}", "[", "]", ",", "'", '"', "#", "|", ">", "\t", "?", "%",
    "&a ", "*a", "<<: *a", "!!binary ", "!!python/object:os.system ", "!!set ", "!!int ", "!!float ",
    "~", "null", "yes", "NaN", ".nan", ".inf", "-.inf", "1e999", "-0", "0x1F", "9" * 400,
    "\x00", "\ufeff", "\u202e", "\U0001f600", "\\ud800", "\\x00",
    "list[", "dict[", "]]", "list[" * 40, "]" * 40, "[" * 300, "]" * 300, "{a: " * 120,
    "include: /dev/zero\n", "include: ..\n", "include: /\n", "include: recipe.yaml\n",
    "types:", "agents:", "fields:", "consumes:", "publishes:", "engine: test", "engine: function",
    "where: ", " and ", " or ", " ~ ", " * ", " ** ", " | string", " | join", " | list", "payload",
    "__class__", "_x", "self", "range(10**9)", "'a' * 10 ** 9", "(" * 80, ")" * 80,
    "join: {by: key, within: 1s}", "batch: {size: 0}", "retry: {max_attempts: 0}", "count: -1",
    "visibility: {kind: after, ttl: 0}", "from: [nobody]", "group: g", "self_trigger: true",
    "type: any", "type: float", "optional: true", "default: .nan", "enum: []", "pattern: '('",
    "max_concurrency: 0", "latency: 100y", "ge: 10\n        le: 1",
]  # fmt: skip


@st.composite
def text_edits(draw: st.DrawFn, text: str) -> bytes:
    """``text`` with a few edits, as bytes (some of which may not be UTF-8)."""
    data = bytearray(text.encode("utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "swap", "bytes"]))
        at = draw(st.integers(0, max(len(data), 1) - 1)) if data else 0
        size = draw(st.integers(0, 40))
        if kind in ("insert", "replace"):
            token = draw(st.sampled_from(TOKENS) | st.text(max_size=12)).encode("utf-8", "surrogatepass")
            end = at + (size if kind == "replace" else 0)
            data[at:end] = token
        elif kind == "delete":
            del data[at : at + size]
        elif kind == "duplicate":
            data[at:at] = data[at : at + size] * draw(st.integers(1, 3))
        elif kind == "swap":
            lines = bytes(data).split(b"\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            data = bytearray(b"\n".join(lines))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


KEYS = [
    "types", "agents", "include", "imports", "settings", "name", "fields", "type", "description",
    "consumes", "publishes", "engine", "where", "join", "by", "within", "batch", "size", "from",
    "group", "delivery", "priority", "retry", "max_attempts", "visibility", "kind", "ttl", "then",
    "count", "default", "optional", "enum", "pattern", "ge", "le", "min_length", "max_length",
    "utilities", "use", "with", "tools", "calls", "best_of", "labels", "tenant", "self_trigger",
    "max_concurrency", "function", "latency", "model", "budget", "recording", "board",
]  # fmt: skip
STRINGS = [
    "str", "int", "float", "any", "list[str]", "dict[any]", "list[" * 35 + "str" + "]" * 35, "Idea", "Nope",
    "score > 3", "text ~ text", "payload['x']", "(['a' * 100000] * 100000) | string", "x.__class__",
    " and ".join(["x"] * 120), "1s", "0s", "-5m", "100y", "test", "dspy", "function", "support_lib:triage",
    "json:dumps", "/dev/zero", "\x00", "\ud800", "", " ", "public", "private", "after", "exclusive",
]  # fmt: skip


def _nest(depth: int, leaf: Any, as_dict: bool) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf} if as_dict else [leaf]
    return leaf


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()  # NaN and infinity included
    | st.text(max_size=20)
    | st.sampled_from(STRINGS)
    | st.sampled_from(KEYS)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
) | st.builds(_nest, st.integers(60, 400), scalars, st.booleans())


@st.composite
def data_edits(draw: st.DrawFn, data: Any) -> Any:
    """``data`` (parsed YAML or JSON) with a few structural edits."""
    for _ in range(draw(st.integers(1, 3))):
        if not isinstance(data, dict | list) or not data:
            data = draw(values)
            continue
        parent: Any = data
        key: Any = None
        node: Any = data
        for choice in draw(st.lists(st.integers(0, 1000), max_size=6)):  # a random path into it
            if isinstance(node, dict) and node:
                parent, key = node, list(node)[choice % len(node)]
            elif isinstance(node, list) and node:
                parent, key = node, choice % len(node)
            else:
                break
            node = parent[key]
        op = draw(st.sampled_from(["replace", "delete", "add", "rename", "wrap"]))
        if key is None:
            op = "add"
        if op == "replace":
            parent[key] = draw(values)
        elif op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = parent.pop(key)
        target = node if isinstance(node, dict) else parent
        if op == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = draw(values)
        elif op == "add" and isinstance(target, list):
            target.append(draw(values))
    return data


def dump_yaml(data: Any) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=200).encode(
        "utf-8", "surrogatepass"
    )


def dump_json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")


_counter = itertools.count()


def place(workspace: Path, seed: str, content: bytes, suffix: str = ".yaml") -> Path:
    """Write a mutant beside its seed (so its includes and imports resolve), under a new name."""
    folder = workspace / ("recipes" if seed.startswith("recipes/") else "docs")
    path = folder / f"mutant_{next(_counter)}{suffix}"
    path.write_bytes(content)
    return path


# -- recipes ---------------------------------------------------------------------------------------


@given(data=st.data(), seed=st.sampled_from(SEEDS))
@fuzz(examples=120)
def test_validate_survives_text_mutations_of_recipes(
    workspace: Path, data: st.DataObject, seed: tuple
) -> None:
    name, text = seed
    recipe = place(workspace, name, data.draw(text_edits(text)))
    check(flock("validate", recipe), {0, 2}, f"validate {name} mutated:\n{recipe.read_bytes()[:2000]!r}")


@given(data=st.data(), seed=st.sampled_from(SEEDS))
@fuzz(examples=120)
def test_validate_survives_data_mutations_of_recipes(
    workspace: Path, data: st.DataObject, seed: tuple
) -> None:
    name, text = seed
    try:
        content = dump_yaml(data.draw(data_edits(yaml.safe_load(text))))
    except RecursionError:  # PyYAML's emitter cannot write a value this deep: nothing to test
        return
    recipe = place(workspace, name, content)
    check(flock("validate", recipe), {0, 2}, f"validate {name} mutated:\n{content[:2000]!r}")
    check(flock("check", recipe), {0, 1, 2}, f"check {name}")
    check(flock("graph", recipe, "-f", "json"), {0, 2}, f"graph {name}")


RUNNABLE = [(f"recipes/{r}", t, i) for i, (r, t) in INPUTS.items() if r not in SLOW]


@given(data=st.data(), seed=st.sampled_from(RUNNABLE))
@fuzz(examples=25)
def test_run_survives_data_mutations_of_recipes(workspace: Path, data: st.DataObject, seed: tuple) -> None:
    name, type_name, input_file = seed
    content = dump_yaml(data.draw(data_edits(yaml.safe_load((ROOT / name).read_text()))))
    recipe = place(workspace, name, content)
    payload = workspace / "recipes" / "inputs" / input_file
    result = flock(
        "run", recipe, "--engine", "test", "--board", ":memory:", "--input", f"{type_name}={payload}"
    )
    check(result, {0, 1, 2}, f"run {name} mutated:\n{content[:2000]!r}")


# -- payloads --------------------------------------------------------------------------------------

PAYLOADS = sorted(INPUTS.items())


def _payload_run(workspace: Path, seed: tuple, content: bytes, suffix: str, command: str) -> None:
    input_file, (recipe_name, type_name) = seed
    payload = place(workspace, "recipes/", content, suffix)
    recipe = workspace / "recipes" / recipe_name
    if command == "run" and recipe_name not in SLOW:
        args: list[str | Path] = ["run", recipe, "--engine", "test", "--board", ":memory:"]
        result = flock(*args, "--input", f"{type_name}={payload}")
        allowed = {0, 1, 2}
    else:
        board = workspace / f"board_{next(_counter)}.db"
        result = flock("publish", type_name, payload, "-r", recipe, "--board", board)
        allowed = {0, 2}
    check(result, allowed, f"{command} {type_name} from {input_file} mutated:\n{content[:2000]!r}")


@given(data=st.data(), seed=st.sampled_from(PAYLOADS), command=st.sampled_from(["run", "publish"]))
@fuzz(examples=40)
def test_payload_text_mutations(workspace: Path, data: st.DataObject, seed: tuple, command: str) -> None:
    text = (RECIPES / "inputs" / seed[0]).read_text(encoding="utf-8")
    _payload_run(workspace, seed, data.draw(text_edits(text)), ".json", command)


@given(
    data=st.data(),
    seed=st.sampled_from(PAYLOADS),
    command=st.sampled_from(["run", "publish"]),
    as_yaml=st.booleans(),
)
@fuzz(examples=40)
def test_payload_data_mutations(
    workspace: Path, data: st.DataObject, seed: tuple, command: str, as_yaml: bool
) -> None:
    parsed = json.loads((RECIPES / "inputs" / seed[0]).read_text(encoding="utf-8"))
    mutated = data.draw(data_edits(parsed))
    try:
        content = dump_yaml(mutated) if as_yaml else dump_json(mutated)
    except (RecursionError, ValueError):  # too deep for the writer, or NaN where JSON refuses it
        return
    _payload_run(workspace, seed, content, ".yaml" if as_yaml else ".json", command)


# -- a few as real processes -----------------------------------------------------------------------


@given(data=st.data(), seed=st.sampled_from(SEEDS))
@fuzz(examples=4)
def test_validate_as_a_real_process(workspace: Path, data: st.DataObject, seed: tuple) -> None:
    """The same answers from the installed command: stderr, exit code, no traceback."""
    name, text = seed
    recipe = place(workspace, name, data.draw(text_edits(text)))
    done = subprocess.run(
        [sys.executable, "-m", "flock_cli", "validate", str(recipe)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        env={**os.environ, "FLOCK_TRACES": "off"},
    )
    what = f"validate {name} mutated (exit {done.returncode}):\n{done.stderr[-3000:]}"
    assert done.returncode in (0, 2), what
    assert "Traceback" not in done.stderr, what


def test_the_mutators_change_their_seeds() -> None:
    """The fuzzing is not vacuous: mutants differ from their seeds, and some are invalid."""
    seen = []

    @given(data=st.data())
    @settings(max_examples=30, derandomize=True, deadline=None, database=None)
    def collect(data: st.DataObject) -> None:
        text = SEEDS[0][1]
        seen.append((text.encode(), data.draw(text_edits(text))))

    collect()
    assert sum(before != after for before, after in seen) >= 25
