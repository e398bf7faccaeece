"""Spans for each model call and tool call a DSPy program makes (a DSPy callback).

One agent run through DSPy may call the model several times (an answer that did not validate is
asked for again; ReAct alternates model and tool calls). Each call becomes a child span of the
run: ``llm.call`` with the GenAI conventions' attributes (the requested and answering model,
sampling parameters, token usage, finish reasons) and ``tool.call`` with the tool's name. They are
exported as ``chat {model}`` and ``execute_tool {tool}`` (``tracing/semconv.py``).

What a call used is read from the LM's history entry for it (DSPy records the response, its usage
and the answering model there). Prompt and answer messages are added only when the user opted in
to capturing content (``ctx.trace.capture_content``).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from flock_cli.tracing.semconv import provider_of

if TYPE_CHECKING:
    from flock_cli.tracing.run_trace import RunTrace

__all__ = ["CallSpans", "Callback"]

_PARAMETERS = {
    "temperature": "gen_ai.request.temperature",
    "max_tokens": "gen_ai.request.max_tokens",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "seed": "gen_ai.request.seed",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "stop": "gen_ai.request.stop_sequences",
}
_TEXT_LIMIT = 64_000  # characters of captured message text per attribute


class Callback:
    """A DSPy callback that answers only the hooks it defines: DSPy calls every ``on_*`` hook of
    a callback (module, adapter, LM and tool starts and ends), and the others do nothing."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return _ignore
        raise AttributeError(name)


class CallSpans(Callback):
    """A DSPy callback that records each LM and tool call of one engine call on ``trace``."""

    def __init__(self, trace: RunTrace, model: str) -> None:
        self.trace = trace
        self.model = model
        self._started: dict[str, tuple[int, Any, int, Any]] = {}  # call id -> (start, instance, seen, inputs)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        seen = len(getattr(instance, "history", ()) or ())
        self._started[call_id] = (time.time_ns(), instance, seen, inputs)

    def on_lm_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        started = self._started.pop(call_id, None)
        if started is None:
            return
        start_ns, lm, seen, inputs = started
        model = str(getattr(lm, "model", None) or self.model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_of(model),
            "gen_ai.request.model": model,
        }
        options = {**(getattr(lm, "kwargs", None) or {}), **(inputs.get("kwargs") or {})}
        for option, key in _PARAMETERS.items():
            value = options.get(option)
            scalar = isinstance(value, int | float | str) and not isinstance(value, bool)
            if scalar or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                attributes[key] = value
        history = list(getattr(lm, "history", ()) or ())
        entry = history[-1] if len(history) > seen and isinstance(history[-1], dict) else None
        if entry is not None:
            attributes.update(_response_attributes(entry))
        if self.trace.capture_content:
            messages = (entry or {}).get("messages") or inputs.get("messages") or inputs.get("prompt")
            if messages is not None:
                attributes["gen_ai.input.messages"] = _text(input_messages(messages))
            if outputs is not None:
                reasons = attributes.get("gen_ai.response.finish_reasons") or []
                attributes["gen_ai.output.messages"] = _text(output_messages(outputs, reasons))
        self.trace.call("llm.call", start_ns, attributes, exception)

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._started[call_id] = (time.time_ns(), instance, 0, inputs)

    def on_tool_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
        started = self._started.pop(call_id, None)
        if started is None:
            return
        start_ns, tool, _, inputs = started
        name = str(getattr(tool, "name", None) or type(tool).__name__)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": call_id,
        }
        description = getattr(tool, "desc", None)
        if isinstance(description, str) and description:
            attributes["gen_ai.tool.description"] = description[:1000]
        if self.trace.capture_content:
            attributes["gen_ai.tool.call.arguments"] = _text(inputs)
            if outputs is not None:
                attributes["gen_ai.tool.call.result"] = _text(outputs)
        self.trace.call("tool.call", start_ns, attributes, exception)


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


def _response_attributes(entry: dict[str, Any]) -> dict[str, Any]:
    """Usage, answering model, response id and finish reasons from an LM history entry."""
    found: dict[str, Any] = {}
    usage = entry.get("usage") or {}
    if isinstance(usage, dict):
        used_in = usage.get("prompt_tokens", usage.get("input_tokens"))
        used_out = usage.get("completion_tokens", usage.get("output_tokens"))
        if isinstance(used_in, int):
            found["gen_ai.usage.input_tokens"] = used_in
        if isinstance(used_out, int):
            found["gen_ai.usage.output_tokens"] = used_out
    response = entry.get("response")
    answered_by = entry.get("response_model") or getattr(response, "model", None)
    if isinstance(answered_by, str) and answered_by:
        found["gen_ai.response.model"] = answered_by
    response_id = getattr(response, "id", None)
    if isinstance(response_id, str) and response_id:
        found["gen_ai.response.id"] = response_id
    reasons = _finish_reasons(response)
    if reasons:
        found["gen_ai.response.finish_reasons"] = reasons
    return found


def _finish_reasons(response: Any) -> list[str]:
    choices = getattr(response, "choices", None)
    if choices is None and isinstance(response, dict):
        choices = response.get("choices")
    reasons = []
    for choice in choices or ():
        reason = (
            choice.get("finish_reason")
            if isinstance(choice, dict)
            else getattr(choice, "finish_reason", None)
        )
        if reason:
            reasons.append(str(getattr(reason, "value", reason)))
    if not reasons:
        reason = getattr(response, "finish_reason", None)
        if reason:
            reasons.append(str(getattr(reason, "value", reason)))
    return reasons


def input_messages(messages: Any) -> list[dict[str, Any]]:
    """Chat messages (``{"role", "content"}``, or a bare prompt) in the conventions' shape:
    ``{"role", "parts": [{"type": "text", "content"}]}``."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    shaped = []
    for message in messages if isinstance(messages, list) else [messages]:
        role = message.get("role", "user") if isinstance(message, dict) else "user"
        content = message.get("content", "") if isinstance(message, dict) else message
        shaped.append({"role": str(role), "parts": _parts(content)})
    return shaped


def output_messages(outputs: Any, reasons: list[str]) -> list[dict[str, Any]]:
    """A model's answers (DSPy's outputs: strings, or dicts with ``text``) in the conventions'
    shape, each with its finish reason."""
    shaped = []
    for index, output in enumerate(outputs if isinstance(outputs, list) else [outputs]):
        text = output.get("text", "") if isinstance(output, dict) else output
        reason = reasons[index] if index < len(reasons) else (reasons[0] if reasons else "stop")
        shaped.append({"role": "assistant", "parts": _parts(text), "finish_reason": reason})
    return shaped


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, list):  # OpenAI-style parts: text parts kept, others as their JSON
        return [
            {"type": "text", "content": part.get("text", "")}
            if isinstance(part, dict) and part.get("type") == "text"
            else {"type": "text", "content": _text(part)}
            for part in content
        ]
    return [{"type": "text", "content": content if isinstance(content, str) else _text(content)}]


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text[:_TEXT_LIMIT]
