"""``where`` and ``join.by`` expressions: a small, sandboxed language over an artifact's payload.

Expressions are Jinja2 expressions (``score >= 8 and 'urgent' in tags``) evaluated in Jinja's
immutable sandbox with no globals at all: they cannot import, call functions other than safe
methods of the values themselves (``title.startswith('A')``), reach dunder or private
attributes, or mutate anything. There are no loops in the language, an expression may nest
``MAX_EXPRESSION_DEPTH`` levels, and what one evaluation builds is bounded (``sandbox.py``), so
an expression always finishes quickly in little memory. Names refer to the payload's fields;
``payload`` is the whole payload as a mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from flock_cli.limits import MAX_EXPRESSION_DEPTH
from flock_cli.recipe.sandbox import CONCAT_FILTER, METHODS, SAFE_FILTERS, budget, environment

__all__ = ["RESERVED_NAMES", "ExpressionError", "compile_expression"]


@dataclass(eq=False)
class ExpressionError(Exception):
    """An expression that does not compile or names something that does not exist."""

    message: str
    column: int = 0  # 1-based column inside the expression, 0 when unknown
    hint: str = ""
    token: str = ""  # the offending name, as written

    def __str__(self) -> str:
        return self.message


_CALLABLE_NAMES = frozenset().union(*METHODS.values())
# Names the expression language reads as literals or keywords: a field cannot be called that.
RESERVED_NAMES = frozenset(
    {"true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is", "if", "else", "self"}
)


def compile_expression(
    source: str, names: Iterable[str], *, purpose: str = "where"
) -> Callable[[BaseModel], Any]:
    """Compile ``source`` into a function of a payload model; check the names it uses.

    ``names`` are the fields every consumed type has. Raises :class:`ExpressionError` for
    syntax errors and unknown names (with a suggestion).
    """
    from jinja2 import TemplateSyntaxError, meta, nodes

    if not source.strip():
        raise ExpressionError(f"the {purpose} expression is empty")
    deep = (
        f"the {purpose} expression is nested too deeply: more than {MAX_EXPRESSION_DEPTH} levels (the limit)"
    )
    # Jinja parses `a or b or c` as a or (b or c): a flat chain of 50 conditions is 50 levels
    hint = (
        "each and/or of a chain counts as a level: test one field against many values with"
        " `field in [...]`, or split it into several where conditions"
    )
    try:
        expr = _parse(source)
    except TemplateSyntaxError as exc:
        c_style = _c_operator(source)  # && || ! from other languages: name the word to use
        if c_style is not None:
            column, token, word = c_style
            raise ExpressionError(
                f"invalid {purpose} expression: '{token}' is not an operator",
                column=column,
                token=token,
                hint=f"use '{word}' (expressions use Python/Jinja operators: and, or, not)",
            ) from None
        message, syntax_hint = _explain(exc.message or "")
        raise ExpressionError(f"invalid {purpose} expression: {message}", hint=syntax_hint) from None
    except RecursionError:
        raise ExpressionError(deep, hint=hint) from None
    if _depth(expr) > MAX_EXPRESSION_DEPTH:  # Python cannot compile what Jinja makes of it
        raise ExpressionError(deep, hint=hint)
    tree = nodes.Template([nodes.Output([expr])])
    tree.set_environment(environment())
    _reject_private_attributes(tree, source, purpose)
    _reject_calls(tree, source, purpose)
    known = {*names, "payload"}
    try:
        undeclared = meta.find_undeclared_variables(tree)
    except TemplateSyntaxError as exc:  # an unknown filter or test
        message, syntax_hint = _explain(exc.message or "")
        raise ExpressionError(f"invalid {purpose} expression: {message}", hint=syntax_hint) from None
    for name in sorted(undeclared):
        if name not in known:
            from flock_cli.errors import did_you_mean

            fields = ", ".join(sorted(known - {"payload"})) or "none"
            raise ExpressionError(
                f"the {purpose} expression uses '{name}', which is not a field of the payload",
                column=_column_of(source, name),
                token=name,
                hint=f"{did_you_mean(name, known).strip() or 'the fields are: ' + fields}",
            )

    compiled = _compile(expr, purpose)

    def evaluate(model: BaseModel) -> Any:
        payload = model.model_dump()
        with budget():  # what one evaluation builds is bounded (sandbox.py)
            return compiled({**payload, "payload": payload})  # one mapping: any field name is safe

    evaluate.__name__ = f"{purpose}({source})"
    evaluate.__qualname__ = evaluate.__name__
    return evaluate


def _parse(source: str) -> Any:
    """The expression's syntax tree (Jinja's parser, as ``compile_expression`` uses it)."""
    from jinja2 import TemplateSyntaxError
    from jinja2.parser import Parser

    parser = Parser(environment(), source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno, None, None)
    return expr


def _depth(expr: Any) -> int:
    """How deeply the tree nests, walked without recursion."""
    deepest = 0
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_EXPRESSION_DEPTH:
            break
        stack.extend((child, depth + 1) for child in node.iter_child_nodes())
    return deepest


def _compile(expr: Any, purpose: str) -> Callable[[dict[str, Any]], Any]:
    """Compile the checked tree, with ``a ~ b`` turned into the size-checked concatenation."""
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.environment import TemplateExpression
    from jinja2.visitor import NodeTransformer

    class BoundedConcat(NodeTransformer):
        def visit_Concat(self, node: Any) -> Any:
            items = [self.visit(child) for child in node.nodes]
            return nodes.Filter(nodes.List(items, lineno=node.lineno), CONCAT_FILTER, [], [], None, None,
                                lineno=node.lineno)  # fmt: skip

    env = environment()
    expr = BoundedConcat().visit(expr)
    expr.set_environment(env)
    body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
    try:
        template = env.from_string(nodes.Template(body, lineno=1))
    except TemplateSyntaxError as exc:  # an unknown filter or test, found when compiling
        message, hint = _explain(exc.message or "")
        raise ExpressionError(f"invalid {purpose} expression: {message}", hint=hint) from None
    except (SyntaxError, RecursionError, MemoryError) as exc:  # past what Python compiles
        raise ExpressionError(f"the {purpose} expression is too complex to compile ({exc})") from None
    compiled: Callable[[dict[str, Any]], Any] = TemplateExpression(template, undefined_to_none=False)
    return compiled


def _explain(message: str) -> tuple[str, str]:
    """Jinja's parser messages, in the words of an expression language; with a hint."""
    message = message.rstrip(".")
    if message == "unexpected 'end of template'":
        return "it ends too early", "finish the comparison, e.g. score > 3"
    if message.startswith("No filter named"):
        return message, f"filters: {', '.join(sorted(SAFE_FILTERS))}"
    if "chunk after expression" in message or "end of print statement" in message:
        return "unexpected text after the expression", "compare with == (not =), combine with and / or"
    return message, ""


_C_OPERATORS = {"&&": "and", "||": "or", "!": "not"}


def _c_operator(source: str) -> tuple[int, str, str] | None:
    """The first ``&&``, ``||`` or ``!`` (not ``!=``) outside string literals: its 1-based column,
    the operator and the word that replaces it."""
    import re

    # a string literal is one match, so an operator inside one is never reported
    tokens = re.finditer(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|&&|\|\||!(?!=)", source)
    match = next((m for m in tokens if m.group() in _C_OPERATORS), None)
    return None if match is None else (match.start() + 1, match.group(), _C_OPERATORS[match.group()])


def _reject_private_attributes(tree: Any, source: str, purpose: str) -> None:
    from jinja2 import nodes

    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attr = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(attr, str) and attr.startswith("_"):
            raise ExpressionError(
                f"the {purpose} expression reads '{attr}'; private and dunder attributes are not allowed",
                column=_column_of(source, attr),
                token=attr,
            )


def _reject_calls(tree: Any, source: str, purpose: str) -> None:
    from jinja2 import nodes

    for node in tree.find_all(nodes.Call):
        name = node.node.attr if isinstance(node.node, nodes.Getattr) else getattr(node.node, "name", "")
        if name not in _CALLABLE_NAMES:
            raise ExpressionError(
                f"the {purpose} expression calls '{name or 'something'}', which expressions cannot call",
                column=_column_of(source, name) if name else 0,
                token=name,
                hint="methods allowed: " + ", ".join(sorted(_CALLABLE_NAMES)),
            )


def _column_of(source: str, name: str) -> int:
    import re

    # blank out string literals so a name is never found inside one
    masked = re.sub(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", lambda m: " " * len(m.group()), source)
    match = (
        re.search(rf"(?<![\w.]){re.escape(name)}\b", masked)
        or re.search(re.escape(name), masked)
        or re.search(re.escape(name), source)  # a key written as a string: payload['_x']
    )
    return match.start() + 1 if match else 0
