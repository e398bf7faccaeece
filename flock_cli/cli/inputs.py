"""Reading payloads for ``flock run --input`` and ``flock publish``: JSON or YAML files, or stdin."""

from __future__ import annotations

import functools
import io
import json
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock_cli.errors import UsageError

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ["parse_input_option", "read_payloads", "validated_payloads"]


def parse_input_option(option: str) -> tuple[str, str]:
    """``"Movie=movie.json"`` -> ``("Movie", "movie.json")``; ``-`` means standard input."""
    type_name, sep, source = option.partition("=")
    if not sep or not type_name.strip() or not source.strip():
        raise UsageError(f"--input takes TYPE=FILE or TYPE=- (standard input), got {option!r}")
    return type_name.strip(), source.strip()


def read_payloads(source: str, *, label: str) -> list[dict[str, Any]]:
    """The payloads in ``source``: one JSON/YAML object, or a list of objects (several artifacts).

    At most ``MAX_PAYLOAD_BYTES`` are read (``flock_cli.limits``); devices and directories are
    refused, so ``/dev/zero`` is an error, not a hang."""
    text, name = _read_text(source, label)
    data = _parse(text, name, yaml_first=source.endswith((".yaml", ".yml")))
    items = data if isinstance(data, list) else [data]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            where = f" (item {i})" if isinstance(data, list) else ""
            raise UsageError(f"{label}: {name}{where} must hold a JSON object, got {_json_kind(item)}")
    if not items:
        raise UsageError(f"{label}: {name} holds an empty list; nothing to publish")
    return items


@functools.cache
def _payload_loader() -> Any:
    """YAML's safe loader (libyaml's when present), refusing a key written twice in a mapping,
    as the JSON reader does (PyYAML keeps the last one)."""
    import yaml

    from flock_cli.limits import DuplicateKey

    base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class PayloadLoader(base):  # type: ignore[misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults`: merged keys give way to the mapping's own
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, Hashable):
                    if key in seen:
                        line = key_node.start_mark.line + 1
                        raise DuplicateKey(f"line {line}: the key {key!r} is written twice in one mapping")
                    seen.add(key)
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            return mapping

    return PayloadLoader


def _json_kind(value: Any) -> str:
    """What ``value`` is called in JSON (a user wrote JSON or YAML, not Python: not "NoneType")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__  # YAML's own kinds (a date, bytes): their Python names say it


def _read_text(source: str, label: str) -> tuple[str, str]:
    from flock_cli.limits import MAX_PAYLOAD_BYTES, InputRefused, read_limited, read_stream_limited

    name = "standard input" if source == "-" else source
    try:
        if source == "-":
            if sys.stdin is None:  # started with stdin closed (`<&-`)
                raise UsageError(f"{label}: standard input is closed; nothing to read from '-'")
            stream = getattr(sys.stdin, "buffer", None)
            if stream is not None:
                raw = read_stream_limited(stream, MAX_PAYLOAD_BYTES, what=name)
            else:  # a text stream put in place of stdin (an embedding program, a test)
                chars = sys.stdin.read(MAX_PAYLOAD_BYTES + 1).encode("utf-8", "surrogatepass")
                raw = read_stream_limited(io.BytesIO(chars), MAX_PAYLOAD_BYTES, what=name)
        else:
            raw = read_limited(Path(source), MAX_PAYLOAD_BYTES, what="payload file")
        return raw.decode("utf-8"), name
    except InputRefused as exc:
        raise UsageError(f"{label}: {exc}") from None
    except FileNotFoundError:
        raise UsageError(f"{label}: no such file: {source}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{label}: {name} is not UTF-8 text (byte {exc.start + 1}): {exc.reason}") from None
    except ValueError:  # os.stat refuses a path with a NUL byte
        raise UsageError(f"{label}: {source!r} is not a valid file path (it holds a NUL byte)") from None
    except OSError as exc:
        raise UsageError(f"{label}: cannot read {source}: {exc.strerror or exc}") from None


def _parse(text: str, name: str, *, yaml_first: bool) -> Any:
    from flock_cli.limits import MAX_PAYLOAD_DEPTH, DuplicateKey, unique_keys

    deep = f"{name}: nested too deeply to read (more than {MAX_PAYLOAD_DEPTH} levels is refused)"
    if not yaml_first:
        try:
            return json.loads(text, object_pairs_hook=unique_keys)
        except DuplicateKey as exc:
            raise UsageError(f"{name}: {exc}") from None
        except json.JSONDecodeError as exc:
            if text.lstrip().startswith(("{", "[")) or not text.strip():
                raise UsageError(f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except RecursionError:
            raise UsageError(deep) from None
        except ValueError as exc:  # a 5,000-digit number
            raise UsageError(f"{name}: cannot read this JSON: {exc}") from None
    import yaml

    try:  # libyaml when present: faster, and it refuses nesting past 1,000 levels itself
        return yaml.load(text, Loader=_payload_loader())
    except DuplicateKey as exc:
        raise UsageError(f"{name}: {exc}") from None
    except yaml.MarkedYAMLError as exc:  # one line, placed like a JSON error
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else name
        context = f" ({exc.context})" if exc.context else ""
        raise UsageError(f"{where}: invalid JSON or YAML: {exc.problem or 'cannot parse'}{context}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{name}: invalid JSON or YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise UsageError(deep) from None
    except (ValueError, TypeError) as exc:  # !!int abc, 2024-02-30
        raise UsageError(f"{name}: cannot read this YAML: {exc}") from None


def validated_payloads(model: type[BaseModel], type_name: str, source: str, *, label: str) -> list[BaseModel]:
    """Every payload in ``source`` validated into ``model``; the first invalid one is an error
    naming the type, the field and, in a list, which item (so nothing is published)."""
    from pydantic import ValidationError

    from flock_cli.core.envelope import payload_limit_error
    from flock_cli.errors import InvalidPayloadError
    from flock_cli.limits import ValueChecker

    items = read_payloads(source, label=label)
    checker = ValueChecker(string_keys=True)  # one count for the file: aliases may cross items
    models = []
    for i, item in enumerate(items):
        try:
            problem = checker.check(item)  # before validation, which would expand an alias bomb
            if problem is not None:
                raise payload_limit_error(type_name, model, problem)
            models.append(model.model_validate(item))
        except (ValidationError, InvalidPayloadError) as exc:
            error = exc if isinstance(exc, InvalidPayloadError) else InvalidPayloadError(type_name, exc)
            if len(items) > 1:
                where = "standard input" if source == "-" else source
                error.args = (f"item {i + 1} of {len(items)} in {where}: {error}",)
            raise error from None
    return models
