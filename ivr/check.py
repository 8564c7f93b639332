"""`ivr check`: everything about a configuration folder that a schema alone cannot see.

Unknown prompts, queues, targets and regions; steps nobody reaches; loops with no way
out; branches that miss a case; retirement windows out of order or shorter than three
months; a legacy line with no route in some region. Each problem names file and line.
"""

from __future__ import annotations

import calendar
import re
from datetime import date, datetime, timedelta
from pathlib import Path

from ivr.config import ConfigError, Document, Loaded, Problem, exists, load_folder
from ivr.core.clock import SHANGHAI
from ivr.core.dialplan import (
    FACTS,
    MEDIA_KINDS,
    PERSON_KINDS,
    TAG_FIELDS,
    TERMINAL_KINDS,
    Branch,
    Collect,
    Dial,
    Emit,
    Flow,
    Play,
    Queue,
    SetTags,
    Survey,
    Transfer,
    edges,
    goes_on,
    reach_backwards,
    template_problem,
)
from ivr.core.directory import Directory, Mode, Seats
from ivr.core.prompts import PROMPT_FIELDS
from ivr.core.routing import EMERGENCY_NUMBERS, REQUIRED_FLOWS, Call, Hotline
from ivr.render import SOUNDS, missing_or_stale

# '#' ends GET DATA and <Gather> input: never part of the keys a collect gets.
_KEYS = re.compile(r"[0-9*]+")

# The transition prompt plays for 3 months (二(二)2): never less; a window much longer
# than that is likely a typo in a date.
LONGEST_WINDOW_DAYS = 100


def window_problem(start: date, end: date) -> str:
    """Why a transition window from ``start`` to ``end`` (both days included) is not
    the 3 months asked for, or "" when it is."""
    days = (end - start).days + 1
    if end + timedelta(days=1) < months_later(start, 3):
        last = months_later(start, 3) - timedelta(days=1)
        return f"{days} days, shorter than 3 months (to {last} at least)"
    if days > LONGEST_WINDOW_DAYS:
        return f"{days} days, much longer than 3 months"
    return ""


def months_later(day: date, months: int) -> date:
    """The same day of the month ``months`` later, or that month's last day."""
    year, month = divmod(day.month - 1 + months, 12)
    year, month = day.year + year, month + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def load_hotline(root: Path) -> Hotline:
    """Load and check a folder; any error raises ConfigError and yields nothing."""
    loaded = check_folder(root)
    errors = [p for p in loaded.problems if p.severity == "error"]
    if errors or loaded.hotline is None:
        raise ConfigError(errors or [Problem(str(root), 1, "configuration could not be loaded")])
    return loaded.hotline


def check_folder(root: Path) -> Loaded:
    from ivr.settings import read_settings

    loaded = load_folder(root)
    # config/controller.yaml: how `ivr serve` runs; checked here so a typo shows before
    settings_doc, settings, settings_problems = read_settings(root)
    loaded.problems += settings_problems
    hotline = loaded.hotline
    if hotline is None:
        return loaded
    problems = _check_directory(hotline.directory, loaded.documents)
    if settings is not None:  # a refused file's own problems are reported already
        problems += _check_twilio_numbers(settings_doc, hotline)
    problems += _check_flows(hotline, loaded)
    catalog_problems = _check_catalog(hotline, loaded)
    problems += catalog_problems
    if not catalog_problems:  # rendering fills in the per-line prompts
        problems += _check_rendered(hotline, loaded)
    loaded.problems += problems
    if any(p.severity == "error" for p in loaded.problems):
        loaded.hotline = None
    return loaded


def _check_twilio_numbers(doc: Document | None, hotline: Hotline) -> list[Problem]:
    """Twilio numbers must name a region and trunk of the directory, and a line the
    routing core knows (as dialed: 12345, a legacy line, 110, a DID, with or without
    its area code): a misspelt one would send that number's callers elsewhere."""
    directory = hotline.directory
    twilio = doc.data.get("twilio") if doc is not None and isinstance(doc.data, dict) else None
    numbers = twilio.get("numbers") if isinstance(twilio, dict) else None
    if doc is None or not isinstance(numbers, dict):
        return []
    problems = []
    for number, entry in numbers.items():
        if not isinstance(entry, dict):
            continue
        for key in ("line", "region", "trunk"):
            value = entry.get(key)
            if value is None:
                continue
            if key == "line":
                ok = _routes_as_known(hotline, str(value), entry)
            else:
                ok = str(value) in (directory.regions if key == "region" else directory.trunks)
            if not ok:
                problems.append(
                    Problem(
                        doc.display,
                        doc.line_of(("twilio", "numbers", number, key)),
                        f"twilio number {number}: unknown {key} {value!r}",
                    )
                )
    return problems


def _routes_as_known(hotline: Hotline, number: str, entry: dict) -> bool:
    """Routed as the webhooks route it: with the entry's trunk and region, which win
    over a DID (whether a number is known does not depend on the day)."""
    trunk, region = entry.get("trunk"), entry.get("region")
    when = datetime(2024, 1, 1, tzinfo=SHANGHAI)
    try:
        call = Call(number, when, None, str(trunk) if trunk else None,
                    str(region) if region else None)  # fmt: skip
        return hotline.route(call).known
    except ValueError:
        return False


# -- the directory --------------------------------------------------------------------


def _check_directory(directory: Directory, docs: dict[str, Document]) -> list[Problem]:
    problems: list[Problem] = []
    lines_doc, trunks_doc = docs["config/lines.yaml"], docs["config/trunks.yaml"]
    hotline_doc = docs["config/hotline.yaml"]
    regions = directory.regions

    def at(doc: Document, loc: tuple, reason: str, severity: str = "error") -> None:
        problems.append(Problem(doc.display, doc.line_of(loc), reason, severity))

    if directory.defaults.default_region not in regions:
        at(
            hotline_doc,
            ("defaults", "default_region"),
            f"unknown region {directory.defaults.default_region!r}",
        )
    for trunk_id, trunk in directory.trunks.items():
        if trunk.region not in regions:
            at(trunks_doc, ("trunks", trunk_id, "region"), f"unknown region {trunk.region!r}")
    for did, region in directory.dids.items():
        if region not in regions:
            at(trunks_doc, ("dids", did), f"unknown region {region!r}")
    for code, region in directory.primary_region_for_area_code.items():
        if region not in regions:
            at(trunks_doc, ("primary_region_for_area_code", code), f"unknown region {region!r}")
    shared: dict[str, list[str]] = {}
    for rid, described in regions.items():
        shared.setdefault(described.area_code, []).append(rid)
    for code, rids in shared.items():
        if len(rids) > 1 and code not in directory.primary_region_for_area_code:
            at(
                trunks_doc,
                ("primary_region_for_area_code",),
                f"area code {code} is shared by {', '.join(rids)}: say which it means "
                "under primary_region_for_area_code",
            )

    for number, line in directory.lines.items():
        loc = ("lines", number)
        if number in EMERGENCY_NUMBERS or number == "12345":
            at(lines_doc, loc, f"{number} is not a legacy line")
        for rid in line.regions:
            if rid not in regions:
                at(lines_doc, (*loc, "regions", rid), f"unknown region {rid!r}")
        if line.mode is not Mode.DUAL_NUMBER and (
            line.seats or any(r.seats or r.kept_seats for r in line.regions.values())
        ):
            at(lines_doc, loc, f"{number}: seats are only for dual_number lines")
        if line.mode is not Mode.WHOLE_MERGE and (
            line.retirement or any(r.retirement for r in line.regions.values())
        ):
            at(lines_doc, loc, f"{number}: a retirement is only for whole_merge lines")
        for rid in regions:
            if line.mode is Mode.WHOLE_MERGE:
                in_region = line.regions.get(rid)
                where = (*loc, "regions", rid) if in_region and in_region.retirement else loc
                # The plain dates: building the merged Retirement would raise on the
                # very mistake reported here.
                start, end, _ = directory.defaults.retirement.layered(
                    line.retirement, in_region.retirement if in_region else None
                )
                if end < start:
                    at(
                        lines_doc,
                        where,
                        f"{number} in {rid}: prompt_until {end} is before retired_on {start}",
                    )
                elif why := window_problem(start, end):
                    at(
                        lines_doc,
                        where,
                        f"{number} in {rid}: transition window {start}..{end} is {why}",
                        "warning",
                    )
            if line.mode is Mode.DUAL_NUMBER:
                seats = directory.seats_of(number, rid)
                if seats is None:
                    at(
                        lines_doc,
                        loc,
                        f"{number} has no route in {rid}: say whether its seats are kept or "
                        "cancelled there (seats: under the line or the region)",
                    )
                in_region = line.regions.get(rid)
                if in_region and in_region.kept_seats and seats is Seats.CANCELLED:
                    at(
                        lines_doc,
                        (*loc, "regions", rid),
                        f"{number} in {rid}: kept_seats given but seats are cancelled",
                        "warning",
                    )
    window = directory.defaults.retirement
    if why := window_problem(window.retired_on, window.prompt_until):
        at(
            hotline_doc,
            ("defaults", "retirement"),
            f"the default transition window {window.retired_on}..{window.prompt_until} is {why}",
            "warning",
        )
    return problems


# -- the flows ------------------------------------------------------------------------


def _check_flows(hotline: Hotline, loaded: Loaded) -> list[Problem]:
    problems: list[Problem] = []
    flows = hotline.flows
    directory = hotline.directory
    known_queues = directory.queues()
    docs = loaded.documents

    def failed_to_load(flow_id: str) -> bool:
        return exists(loaded.root / "dialplans" / f"{flow_id}.yaml")

    for name in REQUIRED_FLOWS:
        if name not in flows and not failed_to_load(name):
            problems.append(
                Problem("dialplans", 1, f"missing flow {name!r} (dialplans/{name}.yaml)")
            )

    graph: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for flow_id, flow in flows.items():
        doc = docs[loaded.flow_files[flow_id]]

        def at(
            index: int, reason: str, *rest: str, severity: str = "error", doc: Document = doc
        ) -> None:
            problems.append(
                Problem(doc.display, doc.line_of(("steps", index, *rest)), reason, severity)
            )

        ids = {s.id for s in flow.steps}
        seen: set[str] = set()
        for index, step in enumerate(flow.steps):
            if step.id in seen:
                at(index, f"step id {step.id!r} is used twice", "id")
            seen.add(step.id)
        for index, step in enumerate(flow.steps):
            node = (flow_id, step.id)
            graph[node] = []
            following = flow.following(step.id)
            for ref in edges(step, following):
                if ref.startswith("@"):
                    if ref[1:] not in flows:
                        if not failed_to_load(ref[1:]):
                            at(index, f"{step.id}: unknown flow {ref}")
                    else:
                        graph[node].append((ref[1:], flows[ref[1:]].start))
                elif ref not in ids:
                    at(index, f"{step.id}: unknown step {ref!r}")
                else:
                    graph[node].append((flow_id, ref))
            if isinstance(step, Collect):
                for keys in step.choices:
                    if not _KEYS.fullmatch(keys) or len(keys) > step.max_digits:
                        at(index, f"{step.id}: choice {keys!r} can never be pressed (keys "
                                  f"0-9 and *, at most max_digits: {step.max_digits})",
                           "choices", keys)  # fmt: skip
            if goes_on(step) and not (step.next or following):
                at(
                    index,
                    f"{step.id}: the flow ends here with no hangup; "
                    "say where the call goes (next:) or end it (kind: hangup)",
                )
            if (
                isinstance(step, Play | Collect | Survey)
                and step.prompt not in hotline.catalog.prompts
            ):
                at(index, f"{step.id}: unknown prompt {step.prompt!r}", "prompt")
            if isinstance(step, Queue | Dial | Transfer):
                _check_target(step.to, known_queues, directory, lambda r, i=index: at(i, r, "to"))
            if isinstance(step, Branch):
                allowed = FACTS[step.on]
                for value in step.cases:
                    if value not in allowed:
                        at(
                            index,
                            f"{step.id}: {step.on} is never {value!r} "
                            f"(it is one of {', '.join(allowed)})",
                            "cases",
                        )
                missing = [v for v in allowed if v not in step.cases]
                if missing and step.otherwise is None:
                    at(
                        index,
                        f"{step.id}: no case for {step.on} = {', '.join(missing)} and no otherwise",
                    )
            if isinstance(step, SetTags | Emit):
                where = "tags" if isinstance(step, SetTags) else "fields"
                values = step.tags if isinstance(step, SetTags) else step.fields
                for name, value in values.items():
                    problem = template_problem(value, TAG_FIELDS)
                    if problem:
                        at(index, f"{step.id}: {name}: {problem}", where, name)
            if not flow.media and step.kind in MEDIA_KINDS:
                at(
                    index,
                    f"{step.id}: a {step.kind} step needs the caller, but this flow "
                    "runs after the caller has gone (media: false)",
                    "kind",
                )

        reachable = _reach(graph, (flow_id, flow.start), within=flow_id)
        for index, step in enumerate(flow.steps):
            if (flow_id, step.id) not in reachable:
                at(index, f"{step.id}: unreachable (no step leads here)", severity="error")

    # Loops with no exit: a step from which no hangup and no person can ever be reached.
    exits = {
        node for node in graph if flows[node[0]].step(node[1]).kind in TERMINAL_KINDS | PERSON_KINDS
    }
    can_exit = reach_backwards(graph, exits)
    for flow_id, step_id in graph:
        if (flow_id, step_id) not in can_exit:
            doc = docs[loaded.flow_files[flow_id]]
            index = [s.id for s in flows[flow_id].steps].index(step_id)
            problems.append(
                Problem(
                    doc.display,
                    doc.line_of(("steps", index)),
                    f"{step_id}: a loop with no exit (no person and no hangup "
                    "can be reached from here)",
                )
            )
    return problems


def _check_catalog(hotline: Hotline, loaded: Loaded) -> list[Problem]:
    """A per-line prompt's text is filled in with the line's name: it must fill."""
    doc = loaded.documents["prompts/catalog.yaml"]
    problems = []
    for pid, prompt in hotline.catalog.prompts.items():
        problem = template_problem(prompt.zh, PROMPT_FIELDS) if prompt.per_line else None
        if problem:
            problems.append(
                Problem(doc.display, doc.line_of(("prompts", pid, "zh")), f"{pid}: {problem}")
            )
    return problems


def _check_rendered(hotline: Hotline, loaded: Loaded) -> list[Problem]:
    """A prompt the flows can play must have its sound file (8 kHz WAV) rendered."""
    folder = loaded.root / SOUNDS
    catalog = loaded.documents["prompts/catalog.yaml"]
    if not folder.is_dir():
        return [
            Problem(
                catalog.display,
                1,
                f"prompts are not rendered: no {SOUNDS}/ (run `ivr prompts render`)",
            )
        ]
    missing, stale = missing_or_stale(hotline, folder)
    problems = [
        Problem(
            catalog.display,
            catalog.line_of(("prompts", sound.prompt)),
            f"prompt {sound.prompt!r} is played but {SOUNDS}/{sound.name}.wav is not "
            "rendered (run `ivr prompts render`)",
        )
        for sound in missing
    ]
    problems += [
        Problem(
            catalog.display,
            catalog.line_of(("prompts", sound.prompt)),
            f"{SOUNDS}/{sound.name}.wav was rendered from another text (run `ivr prompts render`)",
            "warning",
        )
        for sound in stale
    ]
    return problems


def _check_target(ref: str, known_queues: set[str], directory: Directory, report) -> None:
    kind, _, arg = ref.partition(":")
    if kind == "queue" and arg not in known_queues:
        report(f"unknown queue {arg!r}")
    if kind in ("kept_seats", "sub_centre") and arg:
        line = directory.line(arg)
        wanted = Mode.DUAL_NUMBER if kind == "kept_seats" else Mode.SUB_CENTRE
        if line is None or line.mode is not wanted:
            report(f"unknown target {ref!r}: {arg} is not a {wanted.value} line")


def _reach(graph: dict, start: tuple[str, str], within: str) -> set[tuple[str, str]]:
    seen = {start}
    todo = [start]
    while todo:
        node = todo.pop()
        for nxt in graph.get(node, []):
            if nxt[0] == within and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def unused(flows: dict[str, Flow]) -> list[str]:
    """Flows no mode, no engine rule and no other flow enters (a hint, not an error)."""
    entered = set(REQUIRED_FLOWS)
    for flow in flows.values():
        for step in flow.steps:
            entered |= {r[1:] for r in edges(step, flow.following(step.id)) if r.startswith("@")}
    return sorted(set(flows) - entered)
