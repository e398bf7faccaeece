"""Reading payloads for ``flock run --input`` and ``flock publish``: JSON or YAML files, or stdin."""

from __future__ import annotations

import json
import sys
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
    """The payloads in ``source``: one JSON/YAML object, or a list of objects (several artifacts)."""
    if source == "-":
        text, name = sys.stdin.read(), "standard input"
    else:
        path = Path(source)
        try:
            text, name = path.read_text(encoding="utf-8"), str(path)
        except FileNotFoundError:
            raise UsageError(f"{label}: no such file: {source}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{label}: cannot read {source}: {exc}") from None
    data = _parse(text, name, yaml_first=source.endswith((".yaml", ".yml")))
    items = data if isinstance(data, list) else [data]
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            where = f" (item {i})" if isinstance(data, list) else ""
            raise UsageError(f"{label}: {name}{where} must hold a JSON object, got {type(item).__name__}")
    if not items:
        raise UsageError(f"{label}: {name} holds an empty list; nothing to publish")
    return items


def _parse(text: str, name: str, *, yaml_first: bool) -> Any:
    if not yaml_first:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            if text.lstrip().startswith(("{", "[")) or not text.strip():
                raise UsageError(f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except (ValueError, RecursionError) as exc:  # a 5,000-digit number, 100,000 nested lists
            raise UsageError(f"{name}: cannot read this JSON: {exc}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{name}: invalid JSON or YAML: {exc}") from None
    except (ValueError, TypeError, RecursionError) as exc:  # !!int abc, 2024-02-30
        raise UsageError(f"{name}: cannot read this YAML: {exc}") from None


def validated_payloads(model: type[BaseModel], type_name: str, source: str, *, label: str) -> list[BaseModel]:
    """Every payload in ``source`` validated into ``model``; the first invalid one is an error
    naming the type, the field and, in a list, which item (so nothing is published)."""
    from pydantic import ValidationError

    from flock_cli.errors import InvalidPayloadError

    items = read_payloads(source, label=label)
    models = []
    for i, item in enumerate(items):
        try:
            models.append(model.model_validate(item))
        except ValidationError as exc:
            error = InvalidPayloadError(type_name, exc)
            if len(items) > 1:
                where = "standard input" if source == "-" else source
                error.args = (f"item {i + 1} of {len(items)} in {where}: {error}",)
            raise error from None
    return models
