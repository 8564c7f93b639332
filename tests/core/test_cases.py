"""The shipped regression cases pass, and they cover what the issue asks of them."""

from __future__ import annotations

from collections import defaultdict

import pytest

from ivr.core.directory import Mode
from ivr.core.routing import Hotline, split_dialed
from ivr.paths import bundled_root
from ivr.regression import default_case_files, load_cases, run_file

CASE_FILES = default_case_files(bundled_root())


@pytest.mark.parametrize("path", CASE_FILES, ids=lambda p: p.name)
def test_case_file_passes(hotline: Hotline, path) -> None:
    outcomes, problems = run_file(hotline, path)
    assert problems == []
    assert outcomes, "a case file with no cases proves nothing"
    failed = {o.name: o.failures for o in outcomes if not o.passed}
    assert failed == {}


def _regions_per_line(hotline: Hotline) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = defaultdict(set)
    for path in CASE_FILES:
        _, case_file, _ = load_cases(path)
        assert case_file is not None
        for case in case_file.cases:
            _, number = split_dialed(case.call.to)
            regions = case.call.region if isinstance(case.call.region, list) else [case.call.region]
            for region in regions:
                seen[number].add(region or case.call.trunk or "?")
    return seen


def test_every_legacy_line_is_covered_in_two_regions(hotline: Hotline) -> None:
    seen = _regions_per_line(hotline)
    thin = {n: sorted(seen[n]) for n in hotline.directory.lines if len(seen[n]) < 2}
    assert thin == {}


def test_dual_lines_are_covered_kept_and_cancelled_and_unanswered(hotline: Hotline) -> None:
    kept, cancelled = set(), set()
    for number, line in hotline.directory.lines.items():
        if line.mode is not Mode.DUAL_NUMBER:
            continue
        for region in _regions_per_line(hotline)[number]:
            seats = hotline.directory.seats_of(number, region)
            (kept if seats and seats.value == "kept" else cancelled).add(number)
    assert len(kept) >= 5 and len(cancelled) >= 5


def test_a_broken_expectation_fails(hotline: Hotline, tmp_path) -> None:
    # the case runner must be able to fail, or the cases above prove nothing
    path = tmp_path / "c.yaml"
    path.write_text(
        "cases:\n  - name: x\n    call: {to: '12358', region: fuzhou, "
        "at: '2022-01-01T10:00:00'}\n    expect: {prompts: [greeting_12345]}\n"
    )
    (outcome,), _ = run_file(hotline, path)
    assert not outcome.passed


@pytest.mark.parametrize(
    ("at", "reason"),
    [("'2024-02-30T10:00:00'", "day is out of range"), ("tomorrow", "Invalid isoformat")],
)
def test_a_moment_that_is_not_one_is_refused_at_its_line(
    hotline: Hotline, tmp_path, at: str, reason: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "cases:\n  - name: x\n    call: {to: '12345', region: fuzhou,\n"
        f"           at: {at}}}\n    expect: {{mode: main}}\n"
    )
    outcomes, problems = run_file(hotline, path)
    assert outcomes == []
    (problem,) = problems
    assert (
        problem.line == 4 and "call.at" in problem.reason and reason in problem.reason
    )  # the at: line
