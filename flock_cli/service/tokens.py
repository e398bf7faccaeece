"""Bearer tokens of ``flock serve``: who a caller is, and what it may publish.

A token file (YAML or JSON) lists tokens by the SHA-256 of their secret, never the secret::

    tokens:
      - name: acme-app          # the identity: producer of what it publishes, viewer of what it reads
        sha256: 3f1c...e9        # hex SHA-256 of the token (``flock token new`` writes it)
        tenant: acme             # optional: reads see tenant:acme artifacts; publishes default to it
        labels: [compliance]     # optional: reads see labelled artifacts needing these labels
        publish: [SupportRequest]  # types it may publish; "*" for every type; [] or absent: none
        operator: false          # optional: true lets it list agents, runs, and re-deliver dead letters

A caller sends ``Authorization: Bearer <token>``; the service hashes it and looks the hash up, so a
stolen token file gives nobody a usable token.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flock_cli.core.visibility import AgentIdentity
from flock_cli.errors import UsageError

__all__ = ["TOKENS_ENV", "Principal", "TokenBook", "hash_token", "new_token"]

TOKENS_ENV = "FLOCK_TOKENS"
"""Environment variable naming the token file when neither ``--tokens`` nor the recipe does."""

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def hash_token(token: str) -> str:
    """The hex SHA-256 a token file keeps for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A new random token (256 bits), prefixed so that secret scanners recognise it."""
    return "flk_" + secrets.token_urlsafe(32)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sha256: str
    tenant: str | None = None
    labels: list[str] = Field(default_factory=list)
    publish: list[str] | str = Field(default_factory=list)
    operator: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a name starts with a letter and uses letters, digits, _ . - (at most 64)")
        if value == "external":
            raise ValueError("'external' is the anonymous publisher; name the token after its user")
        return value

    @field_validator("sha256")
    @classmethod
    def _hash(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HEX.match(value):
            raise ValueError("must be the 64 hex digits of the token's SHA-256 (flock token new writes it)")
        return value

    @field_validator("publish")
    @classmethod
    def _publish(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str) and value != "*":
            raise ValueError('a list of type names, or "*" for every type')
        return value


@dataclass(frozen=True)
class Principal:
    """The caller a token stands for: its identity (as visibility checks see it) and what it may
    publish (``None``: every type)."""

    identity: AgentIdentity
    may_publish: frozenset[str] | None
    operator: bool = False
    """May list the agents and runs and re-deliver dead letters (it sees every dead letter too)."""

    @property
    def name(self) -> str:
        """The identity's name (the producer of what this caller publishes)."""
        return self.identity.name

    def can_publish(self, type_name: str) -> bool:
        """Whether this caller may publish artifacts of ``type_name``."""
        return self.may_publish is None or type_name in self.may_publish


class TokenBook:
    """The tokens a service accepts, by hash."""

    def __init__(self, principals: dict[str, Principal], source: str) -> None:
        self._by_hash = principals
        self.source = source
        """Where the tokens came from (a file path, or the environment variable), for messages."""

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def principals(self) -> list[Principal]:
        """Every principal, in file order."""
        return list(self._by_hash.values())

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``, or None for an unknown token."""
        return self._by_hash.get(hash_token(token))

    @classmethod
    def load(cls, path: Path) -> TokenBook:
        """Read a token file; a mistake is a :class:`UsageError` naming the file and the entry."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str, *, positions: bool = True) -> TokenBook:
        """Parse token-file text (YAML or JSON) read from ``source`` (messages name the line and
        column of a bad entry unless ``positions`` is false: text that is in no file)."""
        try:
            data: Any = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
            raise UsageError(
                f"{source}{where}: not valid YAML or JSON: {getattr(exc, 'problem', exc)}"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise UsageError(f"{source}: a token file holds a 'tokens:' list (see docs/serve.md)")
        unknown = set(data) - {"tokens"}
        if unknown:
            raise UsageError(f"{source}: unknown key {sorted(unknown)[0]!r} (a token file holds 'tokens:')")
        lines = _entry_lines(text) if positions else []
        principals: dict[str, Principal] = {}
        names: set[str] = set()
        for index, raw in enumerate(data["tokens"]):
            where = f"{source}{lines[index] if index < len(lines) else ''}" + (
                f": tokens[{index}]" if positions else ""
            )
            try:
                entry = _Entry.model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                key = ".".join(str(p) for p in first["loc"]) or "entry"
                raise UsageError(f"{where}: {key}: {first['msg'].removeprefix('Value error, ')}") from None
            if entry.name in names:
                raise UsageError(f"{where}: the name {entry.name!r} is used by another token")
            if entry.sha256 in principals:
                raise UsageError(f"{where}: the same token hash is listed twice")
            names.add(entry.name)
            principals[entry.sha256] = Principal(
                identity=AgentIdentity(
                    name=entry.name, labels=frozenset(entry.labels), tenant_id=entry.tenant
                ),
                may_publish=None if entry.publish == "*" else frozenset(entry.publish),
                operator=entry.operator,
            )
        return cls(principals, source)

    def check_against(self, agents: Iterable[str], types: Iterable[str]) -> None:
        """Refuse tokens named like an agent (they would read its private artifacts and publish in
        its name) and publish rights for types the recipe does not declare."""
        agent_names, type_names = set(agents), set(types)
        for principal in self.principals:
            if principal.name in agent_names:
                raise UsageError(
                    f"{self.source}: token {principal.name!r} has the name of an agent of the recipe;"
                    " give the token a name of its own"
                )
            for type_name in sorted(principal.may_publish or ()):
                if type_name not in type_names:
                    raise UsageError(
                        f"{self.source}: token {principal.name!r} may publish {type_name!r}, which the"
                        f" recipe does not declare (types: {', '.join(sorted(type_names))})"
                    )


def _entry_lines(text: str) -> list[str]:
    """``:line:column`` of each entry of the ``tokens`` list, for messages (empty when unknown)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return []
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if getattr(key, "value", None) == "tokens" and isinstance(value, yaml.SequenceNode):
            return [f":{item.start_mark.line + 1}:{item.start_mark.column + 1}" for item in value.value]
    return []


def tokens_from(file: Path | None, env_var: str | None) -> TokenBook | None:
    """The token book from ``file``, else from the environment variable ``env_var`` (which holds
    the file's text, as a secret store mounts it), else from ``$FLOCK_TOKENS`` (a path); None
    when none is configured."""
    if file is not None:
        return TokenBook.load(file)
    if env_var:
        text = os.environ.get(env_var)
        if text is None:
            raise UsageError(f"the recipe reads its tokens from ${env_var}, which is not set")
        return TokenBook.parse(text, f"${env_var}")
    path = os.environ.get(TOKENS_ENV)
    if path:
        return TokenBook.load(Path(path))
    return None


def entry_text(
    name: str, token: str, *, tenant: str | None, labels: list[str], publish: list[str], operator: bool
) -> dict[str, Any]:
    """The token-file entry of a new token (its hash, never the token)."""
    entry: dict[str, Any] = {"name": name, "sha256": hash_token(token)}
    if tenant:
        entry["tenant"] = tenant
    if labels:
        entry["labels"] = labels
    entry["publish"] = "*" if publish == ["*"] else publish
    if operator:
        entry["operator"] = True
    return entry
