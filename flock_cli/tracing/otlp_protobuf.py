"""OTLP as ``http/protobuf`` (OpenTelemetry's default protocol), built with the official protocol
definitions (the ``opentelemetry-proto`` package, the ``[otlp]`` extra), not hand-rolled bytes.

The OTLP/JSON document :func:`~flock_cli.tracing.otlp.encode` makes is protobuf's JSON mapping of
the same message, but for ids: OTLP/JSON writes trace and span ids in hex where protobuf's JSON
mapping expects base64. They are turned over, and the message is parsed and serialised.
"""

from __future__ import annotations

import base64
from typing import Any

from flock_cli.errors import UsageError

__all__ = ["PROTOBUF", "require", "to_protobuf"]

PROTOBUF = "application/x-protobuf"
_IDS = ("traceId", "spanId", "parentSpanId")


def require() -> None:
    """Fail with the extra to install when the protocol definitions are missing."""
    try:
        import google.protobuf.json_format  # noqa: F401
        import opentelemetry.proto.collector.trace.v1.trace_service_pb2  # noqa: F401
    except ImportError as exc:
        raise UsageError(
            f"OTLP over http/protobuf needs the [otlp] extra ({exc.name} is missing):"
            " pip install 'flock-flow[otlp]'"
        ) from None


def to_protobuf(document: dict[str, Any]) -> bytes:
    """The serialised ``ExportTraceServiceRequest`` of an OTLP/JSON ``document``."""
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    message = ExportTraceServiceRequest()
    ParseDict(_base64_ids(document), message)
    data: bytes = message.SerializeToString()
    return data


def _base64_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in _IDS and isinstance(v, str)
            else _base64_ids(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_base64_ids(v) for v in value]
    return value
