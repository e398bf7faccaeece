"""Recorded model answers: what makes a run with the DSPy engine repeatable with no model.

Every model-backed run is one *call* of the engine, keyed by what determines its answer: the
agent, the signature (instructions, fields, and the output types' JSON schemas), the inputs and
the options that shape the answer (adapter, temperature, max_tokens, tool steps). A second key
leaves the agent out: agents that share a signature (the members of an exclusive group) may take
each other's recorded work, since which of them gets an artifact depends on timing. The model's
raw answers during that call (one per attempt or tool step) are kept in order, with the model
that gave them. The model string is kept beside the key rather than in it, so a recording
replays without naming a model; ``--model`` at replay time picks that model's answers when the
recording holds several.

A recording is a JSON-lines file (``flock trace export RUN --format recording``) or the
``model.call`` events of a run in the trace store (``flock run --replay RUN``). Replaying feeds
the recorded answers to DSPy through its supported engine interface
(``dspy.LM(..., engine=...)``), so parsing, validation and retries run exactly as they did.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock_cli.engines.lm_engine import LMEngine, language_model, text_response
from flock_cli.engines.streaming import emit
from flock_cli.errors import RunError, UserError

if TYPE_CHECKING:
    from flock_cli.tracing.reader import TraceReader

__all__ = [
    "ModelCall",
    "Recording",
    "RecordingError",
    "ReplayMissError",
    "call_key",
    "recorded_calls",
    "replay_lm",
]


class RecordingError(UserError):
    """A recording file that cannot be read or holds something that is not a model call."""


class ReplayMissError(RunError):
    """A run asked for an answer the recording does not hold (its inputs or prompt changed)."""


def call_key(
    agent: str, signature: dict[str, Any], inputs: dict[str, Any], options: dict[str, Any]
) -> tuple[str, str]:
    """The keys of one engine call, sha256 over canonical JSON: (with the agent, without it)."""
    blob = json.dumps(
        {"signature": signature, "inputs": inputs, "options": options},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    prompt_key = hashlib.sha256(blob.encode()).hexdigest()
    return hashlib.sha256(f"{agent}\0{prompt_key}".encode()).hexdigest(), prompt_key


@dataclass
class ModelCall:
    """One recorded engine call: its key, who made it, the model and its answers in order."""

    key: str
    agent: str
    model: str
    answers: list[str]
    usage: dict[str, int] = field(default_factory=dict)
    prompt_key: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    """The MCP tools offered in the call (server, name, description, input_schema)."""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """The MCP tool calls made, in order: tool, arguments, result, is_error."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of a recording file)."""
        data: dict[str, Any] = {"key": self.key, "prompt_key": self.prompt_key, "agent": self.agent,
            "model": self.model, "answers": self.answers, "usage": self.usage}  # fmt: skip
        if self.tools or self.tool_calls:  # calls without MCP tools keep their old shape
            data.update(tools=self.tools, tool_calls=self.tool_calls)
        return data

    def event_attributes(self) -> dict[str, Any]:
        """The attributes of its ``model.call`` trace event (the event carries the agent)."""
        data = self.to_json()
        del data["agent"]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> ModelCall:
        """Read one recorded call; RecordingError names ``where`` when it is not one."""
        if not isinstance(data, dict):
            raise RecordingError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            key, agent, model, answers = data["key"], data["agent"], data["model"], data["answers"]
        except KeyError as exc:
            raise RecordingError(f"{where}: a recorded model call needs '{exc.args[0]}'") from None
        if not (isinstance(answers, list) and all(isinstance(a, str) for a in answers)):
            raise RecordingError(f"{where}: 'answers' must be a list of strings")
        usage = data.get("usage") or {}
        if not (isinstance(usage, dict) and all(isinstance(v, int | float) for v in usage.values())):
            raise RecordingError(f"{where}: 'usage' must map names to numbers")
        prompt_key = data.get("prompt_key")
        tools, tool_calls = data.get("tools") or [], data.get("tool_calls") or []
        for name, items in (("tools", tools), ("tool_calls", tool_calls)):
            if not (isinstance(items, list) and all(isinstance(i, dict) for i in items)):
                raise RecordingError(f"{where}: '{name}' must be a list of objects")
        if any("server" not in t or "name" not in t for t in tools):
            raise RecordingError(f"{where}: each of 'tools' needs 'server' and 'name'")
        return cls(str(key), str(agent), str(model), list(answers), dict(usage),
                   None if prompt_key is None else str(prompt_key), tools, tool_calls)  # fmt: skip


class Recording:
    """Recorded calls by key; the same key asked again gets the next recorded call, then the last."""

    def __init__(self, calls: Iterable[ModelCall] = (), *, source: str = "a recording") -> None:
        self.source = source
        self._calls: dict[str, list[ModelCall]] = {}
        self._by_prompt: dict[str, list[ModelCall]] = {}
        self._used: dict[tuple[str, str | None], int] = {}
        for call in calls:
            self._calls.setdefault(call.key, []).append(call)
            if call.prompt_key is not None:
                self._by_prompt.setdefault(call.prompt_key, []).append(call)

    def __len__(self) -> int:
        return sum(len(calls) for calls in self._calls.values())

    def fingerprint_description(self) -> dict[str, object]:
        """What a definition fingerprint records of a recording: its keys and size, not its path
        or address (two processes replaying one file, from any folder, must agree)."""
        return {"keys": sorted(self._calls), "calls": len(self)}

    def __iter__(self) -> Iterator[ModelCall]:
        for calls in self._calls.values():
            yield from calls

    @classmethod
    def from_file(cls, path: Path) -> Recording:
        """Read a JSON-lines recording; RecordingError names the file and line of a bad one."""
        from flock_cli.limits import MAX_RECORDING_BYTES, InputRefused, read_limited

        try:  # bounded: --replay-from /dev/zero must not read forever
            text = read_limited(path, MAX_RECORDING_BYTES, what="recording").decode("utf-8")
        except InputRefused as exc:
            raise RecordingError(str(exc)) from None
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, a NUL in the path
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise RecordingError(f"cannot read recording {path}: {reason}") from None
        calls = []
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RecordingError(f"{path}:{number}:{exc.colno}: not JSON: {exc.msg}") from None
            except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting past the stack
                raise RecordingError(
                    f"{path}:{number}: cannot read this JSON: {type(exc).__name__}"
                ) from None
            calls.append(ModelCall.from_json(data, f"{path}:{number}"))
        return cls(calls, source=str(path))

    @classmethod
    def from_trace(cls, store: Path, run: str | None) -> Recording:
        """The model calls recorded in run ``run`` (an id or unique prefix; None: the newest) of
        the trace store at ``store``."""
        from flock_cli.tracing.reader import TraceReader

        reader = TraceReader(store)
        row = reader.run(run)
        where = f"run {row.run_id[:12]} of {store}"
        calls = recorded_calls(reader, row.run_id, where)
        if not calls:
            raise RecordingError(f"{where} recorded no model calls: there is nothing to replay")
        return cls(calls, source=f"the recording of {where}")

    def take(self, keys: tuple[str, str], agent: str, model: str | None) -> ModelCall:
        """The recorded call for ``keys`` (this agent's own, else another agent's with the same
        prompt; of ``model`` when given and recorded); ReplayMissError when there is none."""
        key = keys[0]
        calls = self._calls.get(key, [])
        if not calls:
            key = keys[1]
            calls = self._by_prompt.get(key, [])
        if model is not None and any(c.model == model for c in calls):
            calls = [c for c in calls if c.model == model]
        if not calls:
            raise ReplayMissError(
                f"{self.source} holds no recorded answer for agent '{agent}' on these inputs"
                f" (call {keys[0][:12]}): its inputs, description, types or options changed since it was"
                " recorded. Run with a model (--model) to make a new recording."
            )
        used = self._used.get((key, model), 0)
        self._used[(key, model)] = used + 1
        return calls[min(used, len(calls) - 1)]


def recorded_calls(reader: TraceReader, run_id: str, where: str) -> list[ModelCall]:
    """The model calls a run recorded in the trace store, oldest first (``where`` names the run
    in errors)."""
    events = reader.events(run_id, ("model.call",))
    return [
        ModelCall.from_json({**e.attributes, "agent": e.agent}, f"{where}, event {i}")
        for i, e in enumerate(events, 1)
    ]


def replay_lm(call: ModelCall) -> Any:
    """A ``dspy.LM`` that gives ``call``'s answers in order, through DSPy's engine interface."""
    return language_model(f"replay/{call.model}", _ReplayEngine(call), cache=False)


class _ReplayEngine(LMEngine):
    """DSPy engine (``complete(Request) -> Response``) answering from a recorded call."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        self._next = 0

    def complete(self, request: Any) -> Any:
        if self._next >= len(self.call.answers):
            raise ReplayMissError(
                f"the recording of agent '{self.call.agent}' (call {self.call.key[:12]}) holds"
                f" {len(self.call.answers)} answer(s) and a further one was asked for"
            )
        text = self.call.answers[self._next]
        self._next += 1
        emit(text)  # a replayed answer streams too, in one piece
        return text_response(f"replay-{self.call.key[:12]}-{self._next}", self.call.model, text)
