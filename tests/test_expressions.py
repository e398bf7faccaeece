"""The `where` expression language: what it can read, and everything it must refuse."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from flock_cli.recipe.expressions import ExpressionError, compile_expression


class Ticket(BaseModel):
    title: str
    score: int
    tags: list[str]
    owner: dict[str, str]


TICKET = Ticket(title="Alpha outage", score=9, tags=["urgent", "api"], owner={"team": "core"})
NAMES = ["title", "score", "tags", "owner"]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("score >= 8 and 'urgent' in tags", True),
        ("title.startswith('Alpha')", True),
        ("title | lower == 'alpha outage'", True),
        ("payload.score * 2", 18),
        ("owner.team == 'core'", True),
        ("tags | length", 2),
        ("score in [1, 2, 3]", False),
        ("'x' * 3", "xxx"),
        ("2 ** 10", 1024),
    ],
)
def test_expressions_read_the_payload(source: str, expected: object) -> None:
    assert compile_expression(source, NAMES)(TICKET) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("scor > 1", "uses 'scor', which is not a field of the payload"),
        ("score >", "invalid where expression"),
        ("range(10)", "calls 'range', which expressions cannot call"),
        ("lipsum()", "calls 'lipsum'"),
        ("title.center(1000000000) | length > 0", "calls 'center'"),
        ("'{:>1000000000}'.format('a')", "calls 'format'"),
        ("score.to_bytes(1000000000, 'big')", "calls 'to_bytes'"),
        ("(" * 200 + "score" + ")" * 200, "nested too deeply"),
        ("title.__class__", "private and dunder attributes are not allowed"),
        ("payload['__class__']", "private and dunder attributes are not allowed"),
        ("title._private", "private and dunder attributes are not allowed"),
        ("title | attr('upper')", "No filter named 'attr'"),
        ("   ", "is empty"),
    ],
)
def test_bad_expressions_fail_at_load_time(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source, NAMES)
    assert message in str(caught.value)


def test_unknown_names_get_a_suggestion_and_a_column() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("score > 1 and titel == 'x'", NAMES)
    assert caught.value.hint == "Did you mean 'title'?"
    assert caught.value.column == len("score > 1 and ") + 1


@pytest.mark.parametrize(
    "source",
    [
        "'a' * 10 ** 8",  # a huge string
        "tags * 100000000",  # a huge list
        "10 ** 400",  # a huge number
        "((score ** 120) ** 120) ** 120",  # a huge number, built at run time
        "tags.append('x')",  # mutation
        "title.format.__globals__",  # escaping through a method
        "'%1000000000s' % title",  # formatting builds huge strings
        "title.encode() * 1000000000",  # bytes are sized too
        "('a' * 100000) | replace('a', 'a' * 100000)",
        "(['a' * 100000] * 100000) | join",
        "([[0] * 100000] * 100000) | sum(start=[])",
        # each step within limits, the total not: one evaluation has one budget
        "(['a' * 100000] * 100000) | string",  # 100,000 references, then ten billion characters
        "(['a' * 100000] * 100000) | upper",
        "(['a' * 100000] * 100000) | wordcount",
        "[title * 400000, title * 400000, title * 400000]",
        "((title * 400000) ~ (title * 400000)) | length",
        "(title * 400000) + (title * 400000) + (title * 400000)",
        "(tags * 4000000) | list | length",
        " * ".join(["((2 ** 128) ** 128)"] * 7),  # a product of 16,385-bit numbers, step by step
        "(title * 900000) | join | length",
    ],
)
def test_the_sandbox_refuses_unbounded_or_unsafe_work_at_run_time(source: str) -> None:
    from jinja2.exceptions import SecurityError

    try:
        predicate = compile_expression(source, NAMES)
    except ExpressionError:
        return  # refused at load time: fine too
    with pytest.raises(SecurityError):
        predicate(TICKET)


def test_any_field_name_can_be_read() -> None:
    class Odd(BaseModel):
        obj: str
        context: int
        environment: int

    names = ["obj", "context", "environment"]
    predicate = compile_expression("obj == 'x' and context == 2 and environment == 3", names)
    assert predicate(Odd(obj="x", context=2, environment=3)) is True


def test_the_allowed_filters_still_work_within_their_limits() -> None:
    predicate = compile_expression(
        "tags | join(',') | replace(',', ';') == 'urgent;api' and [1, 2] | sum == 3", NAMES
    )
    assert predicate(TICKET) is True


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("([title] * 100000) | length", 100000),  # references: cheap, allowed
        ("(title * 100000) | length", 1_200_000),
        ("(title ~ '!') | length", 13),
        ("tags | join(',') | upper", "URGENT,API"),
        ("((tags * 1000) | unique | list | length)", 2),
        ("title[:5] ~ title[-6:]", "Alphaoutage"),
    ],
)
def test_values_within_the_budget_are_built(source: str, expected: object) -> None:
    assert compile_expression(source, NAMES)(TICKET) == expected


def test_a_long_payload_text_can_be_read_and_lowered() -> None:
    """The budget is for what an expression builds, not for what the payload holds."""
    big = Ticket(title="x" * 3_000_000, score=1, tags=["a"] * 100_000, owner={})
    assert compile_expression("'x' in title.lower() and tags | length > 5", NAMES)(big) is True
