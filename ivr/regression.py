"""`ivr test`: dialplan regression cases, written as YAML, run against a configuration.

A case is a call and the route it must take. A case may name several regions; its
expectations may then say ``{region}``. An admin runs these before a change goes live.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ivr.config import Document, Problem, read_yaml, validate
from ivr.core.clock import parse_when
from ivr.core.routing import Call, Hotline
from ivr.simulate import World, simulate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The caller of a case or a simulated call that names none: a number that can be
# called back, as most callers have. "withheld" simulates a caller without one.
SAMPLE_CALLER = "13900000000"


def simulated_caller(text: str | None) -> str | None:
    return None if text in (None, "", "withheld") else text


class CaseCall(_Strict):
    to: str
    caller: str = Field(default=SAMPLE_CALLER, alias="from",
                        description='the caller\'s number, or "withheld"')  # fmt: skip
    trunk: str | None = None
    region: str | list[str] | None = None
    at: str = Field(description="ISO date-time; local (Asia/Shanghai) when it has no offset")
    keys: str = ""
    dial_result: Literal["answered", "noanswer", "busy", "failed"] = "answered"
    hang_up_at: int | None = None

    @field_validator("at")
    @classmethod
    def _a_moment(cls, value: str) -> str:
        parse_when(value)  # refused here, with the case's line, not when it runs
        return value


class Expect(_Strict):
    mode: str | None = None
    region: str | None = None
    routed_as: str | None = None
    known: bool | None = None
    prompts: list[str] | None = None
    tags: dict[str, str] | None = Field(default=None, description="these tags, others allowed")
    target: dict[str, str] | None = None
    fallbacks: list[str] | None = Field(default=None, description="the fallbacks' reasons")
    events: list[str] | None = Field(default=None, description="event types that must occur")


class Case(_Strict):
    name: str
    call: CaseCall
    expect: Expect


class CaseFile(_Strict):
    cases: Annotated[list[Case], Field(min_length=1)]


@dataclass(frozen=True)
class Outcome:
    file: str
    line: int
    name: str
    failures: list[str]
    actual: dict[str, Any]

    @property
    def passed(self) -> bool:
        return not self.failures


def load_cases(path: Path) -> tuple[Document | None, CaseFile | None, list[Problem]]:
    doc, problems = read_yaml(path, str(path))
    if doc is None:
        return None, None, problems
    cases, problems = validate(doc, CaseFile)
    return doc, cases, problems


def run_file(hotline: Hotline, path: Path) -> tuple[list[Outcome], list[Problem]]:
    doc, case_file, problems = load_cases(path)
    if case_file is None or doc is None:
        return [], problems
    outcomes = []
    for index, case in enumerate(case_file.cases):
        regions = case.call.region if isinstance(case.call.region, list) else [case.call.region]
        for region in regions:
            if region is not None and region not in hotline.directory.regions:
                problems.append(
                    Problem(
                        doc.display,
                        doc.line_of(("cases", index, "call")),
                        f"{case.name}: unknown region {region!r}",
                    )
                )
                continue
            outcomes.append(
                run_case(hotline, case, region, doc.display, doc.line_of(("cases", index)))
            )
    return outcomes, problems


def run_case(hotline: Hotline, case: Case, region: str | None, file: str, line: int) -> Outcome:
    call = Call(
        dialed=case.call.to,
        now=parse_when(case.call.at),
        caller=simulated_caller(case.call.caller),
        trunk=case.call.trunk,
        region=region,
        call_id=f"case-{line}",
    )
    world = World(case.call.keys, case.call.dial_result, case.call.hang_up_at)
    actual = simulate(hotline, call, world)
    fill = {"region": region or actual["region"]}
    name = f"{case.name} [{region}]" if region and isinstance(case.call.region, list) else case.name
    return Outcome(file, line, name, compare(case.expect, actual, fill), actual)


def compare(expect: Expect, actual: dict[str, Any], fill: dict[str, str]) -> list[str]:
    failures = []

    def want(value: Any) -> Any:
        if isinstance(value, str):
            return value.format_map(fill)
        if isinstance(value, list):
            return [want(v) for v in value]
        if isinstance(value, dict):
            return {k: want(v) for k, v in value.items()}
        return value

    for key in ("mode", "region", "routed_as", "known", "prompts"):
        expected = getattr(expect, key)
        if expected is not None and want(expected) != actual[key]:
            failures.append(f"{key}: expected {want(expected)!r}, got {actual[key]!r}")
    if expect.target is not None:
        for key, value in want(expect.target).items():
            if actual["target"].get(key) != value:
                failures.append(
                    f"target.{key}: expected {value!r}, got {actual['target'].get(key)!r}"
                )
    if expect.tags is not None:
        for key, value in want(expect.tags).items():
            if actual["tags"].get(key) != value:
                failures.append(f"tags.{key}: expected {value!r}, got {actual['tags'].get(key)!r}")
    if expect.fallbacks is not None:
        reasons = [f["reason"] for f in actual["fallbacks"]]
        if reasons != expect.fallbacks:
            failures.append(f"fallbacks: expected {expect.fallbacks!r}, got {reasons!r}")
    if expect.events is not None:
        missing = [e for e in expect.events if e not in actual["events"]]
        if missing:
            failures.append(f"events: missing {missing!r}")
    return failures


def default_case_files(root: Path) -> list[Path]:
    return sorted((root / "dialplans" / "cases").glob("*.yaml"))
