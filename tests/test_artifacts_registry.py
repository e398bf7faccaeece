from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from flock_cli import (
    AmbiguousTypeError,
    Artifact,
    DuplicateAgentError,
    Flock,
    InvalidPayloadError,
    TestEngine,
    TypeConflictError,
    UnknownTypeError,
    flock_type,
)
from flock_cli.core.registry import canonical_name
from tests.models import Idea, Movie


async def test_artifact_is_immutable_and_carries_design_fields(flock: Flock) -> None:
    artifact = await flock.publish(Movie(title="CATS", runtime=120), tags={"sci-fi"}, partition_key="p1")
    for field in (
        "id",
        "type",
        "payload",
        "produced_by",
        "correlation_id",
        "partition_key",
        "tags",
        "visibility",
        "created_at",
        "version",
    ):
        assert hasattr(artifact, field)
    assert artifact.type == "Movie"
    assert artifact.payload == {"title": "CATS", "runtime": 120}
    assert artifact.produced_by == "external"
    assert artifact.tags == frozenset({"sci-fi"})
    assert artifact.partition_key == "p1"
    assert artifact.version == 1
    assert artifact.correlation_id is not None
    with pytest.raises(ValidationError):
        artifact.type = "Other"  # type: ignore[misc]


async def test_invalid_payload_names_type_and_field_and_stores_nothing(flock: Flock) -> None:
    flock.register_type(Movie)
    with pytest.raises(InvalidPayloadError) as err:
        await flock.publish_external("Movie", {"title": "CATS", "runtime": 12})
    assert err.value.type_name == "Movie"
    assert err.value.fields == ["runtime"]
    assert "Movie" in str(err.value) and "runtime" in str(err.value)
    assert await flock.store.list() == []


async def test_publish_validates_model_instances_again(flock: Flock) -> None:
    bad = Movie.model_construct(title="x", runtime=5)  # bypasses pydantic validation
    with pytest.raises(InvalidPayloadError) as err:
        await flock.publish(bad)
    assert sorted(err.value.fields) == ["runtime", "title"]
    assert await flock.store.list() == []


async def test_publish_many_is_all_or_nothing(flock: Flock) -> None:
    with pytest.raises(InvalidPayloadError):
        await flock.publish_many(
            [Movie(title="Good", runtime=100), Movie.model_construct(title="Bad", runtime=1)]
        )
    assert await flock.store.list() == []


def test_canonical_names() -> None:
    class Plain(BaseModel):
        x: int

    @flock_type
    class Marked(BaseModel):
        x: int

    assert canonical_name(Movie) == "Movie"
    assert canonical_name(Marked) == f"{__name__}.test_canonical_names.<locals>.Marked"
    assert canonical_name(Plain).endswith("Plain")


def test_bare_names_resolve_when_unambiguous_and_fail_clearly_otherwise() -> None:
    def make(module: str) -> type[BaseModel]:
        cls = type("Report", (BaseModel,), {"__annotations__": {"x": int}, "__module__": module})
        return flock_type(cls)

    first, second = make("pkg_a.models"), make("pkg_b.models")
    flock = Flock()
    flock.register_type(first)
    assert flock.registry.resolve("Report") is first
    assert flock.registry.resolve("pkg_a.models.Report") is first
    flock.register_type(second)
    with pytest.raises(AmbiguousTypeError, match=r"pkg_a\.models\.Report, pkg_b\.models\.Report"):
        flock.registry.resolve("Report")
    with pytest.raises(UnknownTypeError, match="Did you mean"):
        flock.registry.resolve("Reprt")


def test_two_classes_cannot_share_a_name() -> None:
    flock = Flock()

    @flock_type(name="Thing")
    class A(BaseModel):
        x: int

    @flock_type(name="Thing")
    class B(BaseModel):
        y: int

    flock.register_type(A)
    with pytest.raises(TypeConflictError, match="Thing"):
        flock.register_type(B)


def test_registries_do_not_leak_between_flocks() -> None:
    one, two = Flock(), Flock()
    one.agent("a").consumes(Idea).publishes(Movie).with_engines(TestEngine())
    assert "Idea" in one.registry and "Movie" in one.registry
    assert "Idea" not in two.registry
    with pytest.raises(UnknownTypeError):
        two.registry.resolve("Idea")


def test_duplicate_agent_name_is_an_error() -> None:
    flock = Flock()
    flock.agent("a")
    with pytest.raises(DuplicateAgentError, match="'a'"):
        flock.agent("a")


async def test_publish_external_unknown_type_suggests(flock: Flock) -> None:
    flock.register_type(Movie)
    with pytest.raises(UnknownTypeError, match="Did you mean 'Movie'"):
        await flock.publish_external("Movi", {"title": "abc", "runtime": 100})


def test_artifact_as_model_roundtrip() -> None:
    art = Artifact(type="Movie", payload={"title": "ABC", "runtime": 90})
    assert art.as_model(Movie) == Movie(title="ABC", runtime=90)
