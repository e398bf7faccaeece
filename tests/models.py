"""Artifact types shared by the tests (module-level so their canonical names are stable)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from flock_cli import flock_type


@flock_type(name="Idea")
class Idea(BaseModel):
    topic: str


@flock_type(name="Movie")
class Movie(BaseModel):
    title: str = Field(min_length=3)
    runtime: int = Field(ge=60, le=400)


@flock_type(name="Tagline")
class Tagline(BaseModel):
    line: str


@flock_type(name="CodeSubmission")
class CodeSubmission(BaseModel):
    code: str
    language: str


@flock_type(name="BugReport")
class BugReport(BaseModel):
    bugs: list[str]
    severity: str = Field(pattern="^(Critical|High|Medium|Low)$")


@flock_type(name="SecurityReport")
class SecurityReport(BaseModel):
    vulnerabilities: list[str]
    risk: str = Field(pattern="^(Critical|High|Medium|Low)$")


@flock_type(name="FinalReview")
class FinalReview(BaseModel):
    decision: str = Field(pattern="^(Approve|Reject|Needs Work)$")
    summary: str


@flock_type(name="Task")
class Task(BaseModel):
    n: int
    label: str = ""


@flock_type(name="Result")
class Result(BaseModel):
    n: int
    by: str = ""
