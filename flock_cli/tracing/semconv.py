"""OpenTelemetry's GenAI semantic conventions for exported spans.

The trace store keeps the runtime's own names (``agent.run``, ``llm.call``, ``llm.input_tokens``:
``flock trace``, ``flock top`` and replays read them, and old stores hold them). What leaves the
process for a collector (the live OTLP exporter, ``flock trace export --format otlp``) is named
as the conventions say, so Jaeger, Tempo, Langfuse, Logfire or Phoenix show agent invocations,
model calls and tool calls with their usage:

* an agent run is ``invoke_agent {agent}`` with ``gen_ai.operation.name``, ``gen_ai.agent.name``
  and the run's summed usage;
* a model call is a ``chat {model}`` client span with ``gen_ai.provider.name``, the request's
  model and parameters, the response's model and finish reasons, and its token usage;
* a tool call is ``execute_tool {tool}``;
* a failed span carries ``error.type`` and an ``exception`` event;
* every span carries the workflow's correlation id (``flock.correlation_id``).

Prompt and answer text leave the process only when the user opts in with
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``; the local store keeps them anyway
(replays need the answers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["CAPTURE_CONTENT_ENV", "capture_content", "convert", "provider_of"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# Our attribute -> the convention's (summed per agent run, per model call on llm.call spans).
_RENAMED = {
    "llm.model": "gen_ai.request.model",
    "llm.input_tokens": "gen_ai.usage.input_tokens",
    "llm.output_tokens": "gen_ai.usage.output_tokens",
    "llm.cost": "flock.usage.cost",
    "llm.calls": "flock.usage.model_calls",
}
# Attributes and events that hold prompt or answer text, left out unless content is captured.
_CONTENT_ATTRIBUTES = ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions")
_CONTENT_EVENTS = {"engine.stream": None, "model.call": ("answers",), "engine.invalid_output": ("problem",)}
# Model-string prefixes (LiteLLM's, DSPy's) -> the conventions' well-known provider names.
_PROVIDERS = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "anthropic": "anthropic",
    "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "groq": "groq",
    "mistral": "mistral_ai",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
    "ollama": "ollama",
    "ollama_chat": "ollama",
    "local": "llama_cpp",
}


def capture_content(environ: Mapping[str, str]) -> bool:
    """Whether the user opted in to prompt and answer text in exported spans."""
    return environ.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("true", "1", "yes")


def provider_of(model: str) -> str:
    """The ``gen_ai.provider.name`` of a model string (``openai/gpt-4o-mini`` -> ``openai``)."""
    prefix = model.split("/", 1)[0] if "/" in model else model.split(":", 1)[0]
    return _PROVIDERS.get(prefix.lower(), prefix.lower() or "unknown")


def convert(span: dict[str, Any], *, agent: str | None, capture: bool) -> dict[str, Any]:
    """The span (``otlp.SpanData``) named and attributed by the conventions."""
    attributes = {_RENAMED.get(k, k): v for k, v in span["attributes"].items()}
    name, kind = span["name"], span["kind"]
    if name == "agent.run":
        name, kind = f"invoke_agent {agent or 'agent'}", "internal"
        attributes["gen_ai.operation.name"] = "invoke_agent"
        attributes["gen_ai.agent.name"] = agent
        model = attributes.get("gen_ai.request.model")
        if isinstance(model, str):
            attributes.setdefault("gen_ai.provider.name", provider_of(model))
    elif name == "llm.call":
        model = attributes.get("gen_ai.request.model")
        name, kind = f"chat {model}" if model else "chat", "client"
        attributes["gen_ai.operation.name"] = "chat"
        if isinstance(model, str):
            attributes.setdefault("gen_ai.provider.name", provider_of(model))
    elif name == "tool.call":
        tool = attributes.get("gen_ai.tool.name")
        name, kind = f"execute_tool {tool}" if tool else "execute_tool", "internal"
        attributes["gen_ai.operation.name"] = "execute_tool"
    if not capture:
        for key in _CONTENT_ATTRIBUTES:
            attributes.pop(key, None)
    events = _events(span.get("events") or [], capture)
    if span["status"] == "error":
        error_type, _, text = (span.get("message") or "error").partition(": ")
        error_type = error_type if error_type.isidentifier() else "_OTHER"  # the conventions' fallback
        attributes["error.type"] = error_type
        exception = {"exception.type": error_type, "exception.message": text or error_type}
        events.append((span["end_ns"], "exception", exception))
    return {**span, "name": name, "kind": kind, "attributes": attributes, "events": events}


Event = tuple[int, str, dict[str, Any]]


def _events(events: list[Event], capture: bool) -> list[Event]:
    if capture:
        return list(events)
    kept = []
    for ts, kind, attributes in events:
        if kind in _CONTENT_EVENTS:
            hidden = _CONTENT_EVENTS[kind]
            if hidden is None:
                continue
            attributes = {k: v for k, v in attributes.items() if k not in hidden}
        kept.append((ts, kind, attributes))
    return kept
