"""Turning an agent run into a DSPy signature: its inputs, its declared outputs, its description.

One input field per consumed type (a list when the run holds several artifacts of it: a batch, a
count gate), one output field per declared output type (a list of exactly ``count`` items when
the agent publishes several of it). Pydantic types travel as themselves, so DSPy's adapters put
their JSON schema (field descriptions and constraints included) into the prompt and parse the
answer back into them; an input type's field descriptions are added to its field's description,
which DSPy would otherwise leave out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from flock_cli.core.agent import Agent, OutputDecl
    from flock_cli.core.components import Context, EvalInputs

__all__ = ["FEEDBACK_FIELD", "OutputField", "SignaturePlan", "build_signature", "field_name"]

FEEDBACK_FIELD = "previous_attempt_problem"


@dataclass(frozen=True)
class OutputField:
    """A signature output field and the declaration it fills."""

    name: str
    decl: OutputDecl
    count: int | None  # None: a single object; else a list of exactly this many


@dataclass
class SignaturePlan:
    """What a run asks of the model: the signature, its input values and its output fields."""

    signature: Any  # type[dspy.Signature]
    inputs: dict[str, Any]
    outputs: list[OutputField]
    instructions: str
    input_specs: dict[str, str] = field(default_factory=dict)  # field -> type shown, for the record key
    input_schemas: dict[str, Any] = field(default_factory=dict)  # field -> its type's JSON schema

    def describe(self) -> dict[str, Any]:
        """The signature as plain data (a recording key's part): instructions, fields, types and
        the output types' JSON schemas, so a changed constraint makes a new key."""
        return {
            "instructions": self.instructions,
            "inputs": self.input_specs,
            "input_schemas": self.input_schemas,  # their descriptions are in the prompt too
            "outputs": [
                {"name": o.name, "type": o.decl.type_name, "count": o.count,
                 "schema": o.decl.model.model_json_schema()}
                for o in self.outputs
            ],
        }  # fmt: skip

    def input_values(self) -> dict[str, Any]:
        """The input values as JSON-ready data."""
        return {name: _plain(value) for name, value in self.inputs.items()}

    def with_feedback(self) -> Any:
        """The signature with one more input: what was wrong with the previous answer."""
        import dspy

        return self.signature.prepend(
            FEEDBACK_FIELD,
            dspy.InputField(
                desc="Your previous answer could not be used for the reason given here. Answer again,"
                " following the output format and every constraint of the schema exactly."
            ),
            str,
        )


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def field_name(type_name: str) -> str:
    """``Movie`` -> ``movie``, ``tests.BugReport`` -> ``bug_report``."""
    short = type_name.rsplit(".", 1)[-1]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", short).lower()


def _plural(name: str) -> str:
    return f"{name}_list" if name.endswith("s") else f"{name}s"


def _describe_type(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    if doc.startswith(f"{model.__name__}("):  # pydantic's generated docstring says nothing
        doc = ""
    parts = [doc] if doc else []
    described = [f"{name}: {f.description}" for name, f in model.model_fields.items() if f.description]
    if described:
        parts.append("Fields: " + "; ".join(described))
    return " ".join(parts)


def build_signature(agent: Agent, ctx: Context, inputs: EvalInputs) -> SignaturePlan:
    """The signature of one run of ``agent`` on ``inputs``."""
    import dspy

    models: dict[str, type[BaseModel]] = {}
    for sub in agent.subscriptions:
        models.update(sub.models)
    by_type: dict[str, list[Any]] = {}
    for artifact in inputs.artifacts:
        by_type.setdefault(artifact.type, []).append(artifact)
    fields: dict[str, tuple[Any, Any]] = {}
    values: dict[str, Any] = {}
    specs: dict[str, str] = {}
    schemas: dict[str, Any] = {}
    for type_name, artifacts in by_type.items():
        model = models.get(type_name)
        many = ctx.is_batch or len(artifacts) > 1
        name = _unique(_plural(field_name(type_name)) if many else field_name(type_name), fields)
        # In payload order, not arrival order: which artifact of a batch came first depends on
        # timing, and a replay must see the same prompt.
        artifacts = sorted(artifacts, key=_canonical_payload) if many else artifacts
        items = [a.as_model(model) if model is not None else dict(a.payload) for a in artifacts]
        schemas[name] = model.model_json_schema() if model is not None else None
        kind: Any = model if model is not None else dict
        desc = _describe_type(model) if model is not None else f"a {type_name} artifact"
        if many:
            kind = list[kind]
            desc = f"{len(items)} {type_name} artifacts. {desc}".strip()
        fields[name] = (kind, dspy.InputField(desc=desc or type_name))
        values[name] = items if many else items[0]
        specs[name] = f"list[{type_name}]" if many else type_name
    outputs: list[OutputField] = []
    taken = set(fields)
    for decl in agent.outputs:
        name = field_name(decl.type_name)
        count = decl.count if decl.count is not None and decl.count != 1 else None
        if count is not None:
            name = _plural(name)
        if name in taken:  # the agent consumes and publishes the same type (a revision)
            name = _unique(f"new_{name}", taken)
        taken.add(name)
        out_kind: Any = decl.model if count is None else list[decl.model]  # type: ignore[name-defined]
        desc = _describe_type(decl.model) or decl.type_name
        if count is not None:
            desc = f"exactly {count} {decl.type_name} objects. {desc}"
        fields[name] = (out_kind, dspy.OutputField(desc=desc))
        outputs.append(OutputField(name, decl, count))
    instructions = agent.description.strip() or _default_instructions(list(specs.values()), outputs)
    signature = dspy.make_signature(fields, instructions, signature_name=_class_name(agent.name))
    return SignaturePlan(signature, values, outputs, instructions, specs, schemas)


def _unique(name: str, taken: Any) -> str:
    """``name``, or ``name_2``, ``name_3``... when two types share a short name (``a.Report``,
    ``b.Report``): each keeps a field of its own."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _canonical_payload(artifact: Any) -> str:
    import json

    return json.dumps(artifact.payload, sort_keys=True, default=str)


def _default_instructions(inputs: list[str], outputs: list[OutputField]) -> str:
    made = ", ".join(o.decl.type_name.rsplit(".", 1)[-1] for o in outputs) or "nothing"
    given = ", ".join(i.rsplit(".", 1)[-1] for i in inputs) or "no inputs"
    return f"Given {given}, produce {made}."


def _class_name(agent: str) -> str:
    words = re.split(r"[^0-9A-Za-z]+", agent)
    name = "".join(w[:1].upper() + w[1:] for w in words if w) or "Agent"
    return name if name[0].isalpha() else f"Agent{name}"
