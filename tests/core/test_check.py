"""`ivr check`: a broken configuration is refused with file, line and reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from config_edits import edit, line_of

from ivr.check import check_folder, load_hotline
from ivr.config import ConfigError
from ivr.paths import bundled_root


def errors_of(root: Path) -> list[str]:
    return [str(p) for p in check_folder(root).problems if p.severity == "error"]


def test_bundled_configuration_is_clean() -> None:
    loaded = check_folder(bundled_root())
    assert loaded.hotline is not None
    assert [p for p in loaded.problems if p.severity == "error"] == []


def test_malformed_yaml_names_file_and_line(config_copy: Path) -> None:
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, "  - id: seats\n", "  - id: seats\n   bad: [\n")
    errors = errors_of(config_copy)
    yaml_errors = [e for e in errors if re.match(r".*dialplans/main\.yaml:\d+: error: YAML", e)]
    assert len(yaml_errors) == 1, errors
    reported = int(yaml_errors[0].split("main.yaml:")[1].split(":")[0])
    assert abs(reported - line_of(main, "bad: [")) <= 1
    assert not any("missing flow 'main'" in e for e in errors)  # said once is enough


def test_unknown_key_names_its_line(config_copy: Path) -> None:
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, "    timeout: 45\n", "    timout: 45\n")
    errors = errors_of(config_copy)
    assert any(
        f"main.yaml:{line_of(main, 'timout')}:" in e
        and "timout" in e
        and "Extra inputs are not permitted" in e
        for e in errors
    ), errors


def test_wrong_type_names_its_line(config_copy: Path) -> None:
    hotline = config_copy / "config" / "hotline.yaml"
    edit(hotline, "answer_timeout: 20", "answer_timeout: twenty")
    (error,) = errors_of(config_copy)
    assert f"hotline.yaml:{line_of(hotline, 'twenty')}:" in error
    assert "defaults.answer_timeout" in error


def test_unquoted_number_gets_a_hint(config_copy: Path) -> None:
    regions = config_copy / "config" / "regions.yaml"
    edit(regions, 'utilities: {power: "95598"', "utilities: {power: 95598")
    (error,) = errors_of(config_copy)
    assert "write numbers and codes in quotes" in error
    assert f"regions.yaml:{line_of(regions, 'power: 95598')}:" in error


def test_window_out_of_order_is_refused_at_the_line(config_copy: Path) -> None:
    lines = config_copy / "config" / "lines.yaml"
    edit(
        lines,
        "xiamen: {retirement: {retired_on: 2021-11-15, prompt_until: 2022-02-14}}",
        "xiamen: {retirement: {retired_on: 2022-03-15}}",
    )
    errors = errors_of(config_copy)
    assert any(
        f"lines.yaml:{line_of(lines, 'retired_on: 2022-03-15')}:" in e
        and "12365 in xiamen: prompt_until 2022-02-28 is before retired_on 2022-03-15" in e
        for e in errors
    ), errors


def test_line_level_window_out_of_order_is_refused_not_raised(config_copy: Path) -> None:
    # Under the line, not a region: the merge with the defaults used to raise a bare
    # pydantic error out of `ivr check` (and out of a reload).
    lines = config_copy / "config" / "lines.yaml"
    edit(
        lines,
        '"12330": {name: 知识产权,',
        '"12330": {retirement: {prompt_until: 2021-11-01}, name: 知识产权,',
    )
    errors = errors_of(config_copy)
    assert any(
        f"lines.yaml:{line_of(lines, 'prompt_until: 2021-11-01')}:" in e
        and "12330 in fuzhou: prompt_until 2021-11-01 is before retired_on 2021-12-01" in e
        for e in errors
    ), errors
    with pytest.raises(ConfigError):
        load_hotline(config_copy)


def test_region_override_may_put_a_line_window_right(config_copy: Path) -> None:
    # The line's own date is out of order with the defaults, the region's brings the
    # window right again: only the window in force counts, at check and at call time.
    lines = config_copy / "config" / "lines.yaml"
    edit(
        lines,
        '"12330": {name: 知识产权,',
        '"12330": {retirement: {prompt_until: 2021-11-01}, '
        "regions: {xiamen: {retirement: {retired_on: 2021-08-01}}}, name: 知识产权,",
    )
    errors = errors_of(config_copy)
    assert not any("12330 in xiamen" in e for e in errors), errors
    assert any("12330 in fuzhou" in e for e in errors), errors
    edit(lines, "retirement: {prompt_until: 2021-11-01}, ", "")
    edit(lines, "regions: {xiamen: {retirement: {retired_on: 2021-08-01}}}, ", "")
    edit(
        lines,
        '"12330": {name: 知识产权,',
        '"12330": {retirement: {prompt_until: 2021-11-01, retired_on: 2021-08-01}, '
        "regions: {xiamen: {retirement: {prompt_until: 2021-12-31}}}, name: 知识产权,",
    )
    hotline = load_hotline(config_copy)
    window = hotline.directory.retirement("12330", "xiamen")
    assert (str(window.retired_on), str(window.prompt_until)) == ("2021-08-01", "2021-12-31")


def test_a_date_that_does_not_exist_names_its_line(config_copy: Path) -> None:
    hotline = config_copy / "config" / "hotline.yaml"
    edit(hotline, "prompt_until: 2022-02-28", "prompt_until: 2022-02-30")
    (error,) = errors_of(config_copy)
    assert f"hotline.yaml:{line_of(hotline, '2022-02-30')}: error:" in error
    assert "2022-02-30 is not a date" in error


@pytest.mark.parametrize(
    ("until", "why"),
    [
        ("2021-12-14", "30 days, shorter than 3 months (to 2022-02-14 at least)"),
        # 80 days: once let through as "about three months"; the prompt would stop
        # ten days before the document allows
        ("2022-02-02", "80 days, shorter than 3 months"),
        ("2022-02-13", "91 days, shorter than 3 months"),  # one day short
        ("2022-03-31", "137 days, much longer than 3 months"),
    ],
)
def test_window_not_three_months_is_a_warning(config_copy: Path, until: str, why: str) -> None:
    lines = config_copy / "config" / "lines.yaml"
    edit(lines, "prompt_until: 2022-02-14}", f"prompt_until: {until}}}")
    loaded = check_folder(config_copy)
    assert loaded.hotline is not None
    (warning,) = [p for p in loaded.problems if p.severity == "warning"]
    assert f"12365 in xiamen: transition window 2021-11-15..{until} is {why}" in str(warning)


@pytest.mark.parametrize(
    ("start", "until"),
    [("2021-11-15", "2022-02-14"), ("2021-12-01", "2022-02-28"), ("2021-11-30", "2022-02-27"),
     ("2023-11-30", "2024-02-28"), ("2021-12-31", "2022-03-30")],
)  # fmt: skip
def test_three_calendar_months_to_the_day_is_enough(start: str, until: str) -> None:
    # Nov 30 + 3 months is Feb 28 (Feb 29 in a leap year): the window ends the day before.
    from datetime import date

    from ivr.check import window_problem

    assert window_problem(date.fromisoformat(start), date.fromisoformat(until)) == ""
    shorter = date.fromisoformat(until).toordinal() - 1
    assert "shorter than 3 months" in window_problem(
        date.fromisoformat(start), date.fromordinal(shorter)
    )


def test_duplicate_key_is_refused(config_copy: Path) -> None:
    lines = config_copy / "config" / "lines.yaml"
    edit(
        lines,
        '  "12331":',
        '  "12330": {name: x, department: y, national_mode: whole_merge, '
        'mode: whole_merge, source: confirmed}\n  "12331":',
    )
    (error,) = errors_of(config_copy)
    assert "'12330' appears twice (first on line" in error


def test_unknown_prompt_queue_and_region(config_copy: Path) -> None:
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, "prompt: emergency_menu", "prompt: emergency_menu_v2")
    edit(main, "to: enterprise_seat", "to: queue:fuzhou-nobody")
    trunks = config_copy / "config" / "trunks.yaml"
    edit(trunks, "{region: nanping,", "{region: nanpin,")
    errors = errors_of(config_copy)
    assert any(
        "unknown prompt 'emergency_menu_v2'" in e
        and f"main.yaml:{line_of(main, 'emergency_menu_v2')}:" in e
        for e in errors
    )
    assert any(
        "unknown queue 'fuzhou-nobody'" in e and f"main.yaml:{line_of(main, 'fuzhou-nobody')}:" in e
        for e in errors
    )
    assert any(
        "unknown region 'nanpin'" in e and f"trunks.yaml:{line_of(trunks, 'nanpin,')}:" in e
        for e in errors
    )


def test_unknown_step_and_flow_references(config_copy: Path) -> None:
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, "otherwise: seats", "otherwise: seets")
    edit(
        main,
        'answered: "@survey", noanswer: "@overflow"',
        'answered: "@surfey", noanswer: "@overflow"',
    )
    errors = errors_of(config_copy)
    assert any("unknown step 'seets'" in e for e in errors)
    assert any("unknown flow @surfey" in e for e in errors)


def test_unreachable_step(config_copy: Path) -> None:
    main = config_copy / "dialplans" / "main.yaml"
    edit(
        main,
        'shortcuts: {"1": enterprise, "2": dialect, "0": emergency_menu}',
        'shortcuts: {"1": enterprise, "0": emergency_menu}',
    )
    errors = errors_of(config_copy)
    assert any(
        "dialect: unreachable" in e and f"main.yaml:{line_of(main, 'id: dialect')}:" in e
        for e in errors
    ), errors


def test_loop_with_no_exit(config_copy: Path) -> None:
    (config_copy / "dialplans" / "overflow.yaml").write_text(
        "flow: overflow\ntitle: t\nsteps:\n"
        "  - {id: offer, kind: collect, prompt: overflow_offer_callback, choices: {'1': again},"
        " otherwise: again}\n"
        "  - {id: again, kind: play, prompt: callback_confirmed, next: offer}\n",
        encoding="utf-8",
    )
    errors = errors_of(config_copy)
    assert any("overflow.yaml:4:" in e and "offer: a loop with no exit" in e for e in errors)
    assert any("overflow.yaml:5:" in e and "again: a loop with no exit" in e for e in errors)


def test_step_running_off_the_end(config_copy: Path) -> None:
    survey = config_copy / "dialplans" / "survey.yaml"
    edit(survey, "  - id: end\n    kind: hangup\n    reason: survey_done\n", "")
    errors = errors_of(config_copy)
    assert any("thanks: the flow ends here with no hangup" in e for e in errors)


def test_branch_missing_a_case(config_copy: Path) -> None:
    retired = config_copy / "dialplans" / "retired_line.yaml"
    edit(retired, "      after_transition: after_window\n", "")
    errors = errors_of(config_copy)
    assert any("no case for phase = after_transition and no otherwise" in e for e in errors)


def test_branch_on_an_impossible_value(config_copy: Path) -> None:
    dual = config_copy / "dialplans" / "dual_line.yaml"
    edit(
        dual,
        "cases: {kept: kept_seats, cancelled: seats}",
        "cases: {kept: kept_seats, cancelled: seats, retained: seats}",
    )
    errors = errors_of(config_copy)
    assert any("seats is never 'retained'" in e for e in errors)


def test_dual_line_with_no_route_in_a_region(config_copy: Path) -> None:
    lines = config_copy / "config" / "lines.yaml"
    edit(
        lines,
        "    seats: cancelled            # assumption\n    regions:\n      xiamen: {seats: kept}",
        "    regions:\n      xiamen: {seats: kept}",
    )
    errors = errors_of(config_copy)
    assert any("12369 has no route in fuzhou" in e for e in errors)
    assert not any("12369 has no route in xiamen" in e for e in errors)


def test_media_step_in_a_flow_for_a_gone_caller(config_copy: Path) -> None:
    abandoned = config_copy / "dialplans" / "abandoned.yaml"
    edit(
        abandoned,
        "  - id: end\n",
        "  - id: sorry\n    kind: play\n    prompt: survey_thanks\n  - id: end\n",
    )
    errors = errors_of(config_copy)
    assert any("sorry: a play step needs the caller" in e for e in errors)


def test_missing_required_flow_and_misnamed_file(config_copy: Path) -> None:
    (config_copy / "dialplans" / "abandoned.yaml").rename(config_copy / "dialplans" / "left.yaml")
    errors = errors_of(config_copy)
    assert any("missing flow 'abandoned'" in e for e in errors)
    assert any("left.yaml" in e and "must be in a file named abandoned.yaml" in e for e in errors)


def test_yaml_words_on_and_no_are_not_booleans(config_copy: Path) -> None:
    # YAML 1.1 would read `on:` as True and break every outcome mapping.
    assert "on: {answered:" in (config_copy / "dialplans" / "main.yaml").read_text()
    assert errors_of(config_copy) == []


def test_survey_must_offer_the_five_grades(config_copy: Path) -> None:
    survey = config_copy / "dialplans" / "survey.yaml"
    edit(survey, ', "5": 非常不满意', "")
    errors = errors_of(config_copy)
    assert any("survey.yaml:" in e and "five grades" in e for e in errors)


def test_load_hotline_refuses_a_broken_folder_whole(config_copy: Path) -> None:
    edit(config_copy / "dialplans" / "main.yaml", "prompt: greeting_12345", "prompt: nope")
    with pytest.raises(ConfigError) as caught:
        load_hotline(config_copy)
    assert "unknown prompt 'nope'" in str(caught.value)
    assert all(p.line >= 1 and p.file for p in caught.value.problems)


def test_prompt_played_but_not_rendered(config_copy: Path) -> None:
    (config_copy / "prompts" / "sounds" / "transition_notice-12358.wav").unlink()
    errors = errors_of(config_copy)
    catalog = config_copy / "prompts" / "catalog.yaml"
    assert any(
        f"catalog.yaml:{line_of(catalog, 'transition_notice:')}:" in e
        and "prompts/sounds/transition_notice-12358.wav is not rendered" in e
        for e in errors
    ), errors


def test_nothing_rendered_is_one_clear_error(config_copy: Path) -> None:
    import shutil

    shutil.rmtree(config_copy / "prompts" / "sounds")
    assert errors_of(config_copy) == [
        f"{config_copy}/prompts/catalog.yaml:1: error: prompts are not rendered: "
        "no prompts/sounds/ (run `ivr prompts render`)"
    ]


def test_changed_prompt_text_is_a_stale_render_warning(config_copy: Path) -> None:
    edit(config_copy / "prompts" / "catalog.yaml", "感谢您的评价，再见。", "谢谢，再见。")
    loaded = check_folder(config_copy)
    assert loaded.hotline is not None
    assert any(
        "survey_thanks.wav was rendered from another text" in str(p) and p.severity == "warning"
        for p in loaded.problems
    )


def test_the_files_redis_url_follows_the_same_rule_as_redis_and_the_environment(
    config_copy: Path,
) -> None:
    controller = config_copy / "config" / "controller.yaml"
    edit(controller, "redis_url: redis://127.0.0.1:6379/0", "redis_url: foo://x")
    (error,) = errors_of(config_copy)
    assert f"controller.yaml:{line_of(controller, 'foo://x')}:" in error
    assert "is not a Redis URL" in error
    edit(controller, "redis_url: foo://x", "redis_url: unix:///run/redis/redis.sock")
    assert errors_of(config_copy) == []  # as --redis and IVR_REDIS_URL take it


# -- what used to pass the check, or end in a traceback --------------------------------


@pytest.mark.parametrize(
    "template", ["{line:d}", "{line!r}", "{}", "{line:>{region}}", "{line[0]}", "{line", "}"]
)
def test_a_tag_that_cannot_be_filled_in_is_refused(config_copy: Path, template: str) -> None:
    # Each of these failed every call at its set step (or some calls: "{line[0]}" on an
    # empty field); only plain placeholders are safe.
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, 'original_line: "{line}"', f'original_line: "{template}"')
    assert any(e.startswith(f"dialplans/main.yaml:{line_of(main, 'original_line')}: error:")
               for e in _relative(errors_of(config_copy), config_copy))  # fmt: skip


@pytest.mark.parametrize("text", ["{nope}今后", "{今后", "{line:d}今后"])
def test_a_per_line_prompt_that_cannot_be_filled_in_is_refused(
    config_copy: Path, text: str
) -> None:
    catalog = config_copy / "prompts" / "catalog.yaml"
    edit(catalog, "今后", text)
    errors = _relative(errors_of(config_copy), config_copy)
    assert any(e.startswith(f"prompts/catalog.yaml:{line_of(catalog, text)}: error:")
               for e in errors), errors  # fmt: skip


def _append(path: Path, data: bytes) -> None:
    path.write_bytes(path.read_bytes() + data)


BROKEN = {
    "a NUL byte": ("config/hotline.yaml", lambda p: _append(p, b"\n# \x00\n"), "not allowed"),
    "a control character": ("dialplans/main.yaml", lambda p: _append(p, b"\n# \x07\n"),
                            "not allowed"),
    "a list as a key": ("config/hotline.yaml", lambda p: _append(p, b"\n? [a, b]\n: 1\n"),
                        "plain value"),
    "5,000 digits": ("config/hotline.yaml", lambda p: _append(p, b"\nx: " + b"9" * 5000 + b"\n"),
                     "number"),
    "3,000 brackets deep": ("dialplans/main.yaml",
                            lambda p: _append(p, b"\nx: " + b"[" * 3000 + b"]" * 3000 + b"\n"),
                            "nested too deeply"),
    "year 9999": ("config/hotline.yaml",
                  lambda p: edit(p, "prompt_until: 2022-02-28", "prompt_until: 9999-12-31"),
                  "2100-12-31"),
    "over 1 MiB": ("dialplans/main.yaml", lambda p: _append(p, b"\n#" + b"x" * (1 << 20)),
                   "more than"),
}  # fmt: skip


@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_every_broken_file_gives_file_line_and_reason(config_copy: Path, breakage: str) -> None:
    name, breaking, reason = BROKEN[breakage]
    breaking(config_copy / name)
    errors = _relative(errors_of(config_copy), config_copy)
    assert any(e.startswith(f"{name}:") and reason in e for e in errors), errors


def test_the_line_of_a_nul_byte_is_its_own(config_copy: Path) -> None:
    main = config_copy / "dialplans" / "main.yaml"
    lines = main.read_bytes().count(b"\n")
    _append(main, b"# \x00\n")
    errors = _relative(errors_of(config_copy), config_copy)
    assert any(e.startswith(f"dialplans/main.yaml:{lines + 1}:") for e in errors), errors


def test_a_fifo_among_the_flows_is_refused_not_waited_on(config_copy: Path) -> None:
    fifo = config_copy / "dialplans" / "zz.yaml"
    os.mkfifo(fifo)
    done: list = []
    worker = threading.Thread(target=lambda: done.append(errors_of(config_copy)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # free the check, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
    assert done, "the check waited on a FIFO"
    assert any("zz.yaml:1: error: cannot read" in e and "not a regular file" in e
               for e in done[0])  # fmt: skip


def test_an_unreadable_folder_is_a_problem_not_a_traceback() -> None:
    # As a user other than root (who reads anything): a folder of mode 000, in a
    # folder that user may enter (pytest's own are the owner's alone).
    top = Path(tempfile.mkdtemp(prefix="ivr-unreadable-"))
    top.chmod(0o755)
    root = top / "conf"
    shutil.copytree(bundled_root(), root)
    for folder in ("config", "dialplans"):
        (root / folder).chmod(0)
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    try:
        done = subprocess.run(
            [*(as_nobody if os.geteuid() == 0 else []), sys.executable, "-m", "ivr.cli",
             "check", str(root)],
            capture_output=True, text=True, timeout=60, cwd="/",
        )  # fmt: skip
    finally:
        for folder in ("config", "dialplans"):
            (root / folder).chmod(0o755)
        shutil.rmtree(top)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "config/hotline.yaml:1: error: cannot read" in done.stderr
    assert "dialplans:1: error: cannot read" in done.stderr


def test_a_flow_saved_as_yml_is_not_silently_left_out(config_copy: Path) -> None:
    (config_copy / "dialplans" / "holiday.yml").write_text("flow: holiday\n", encoding="utf-8")
    problems = [str(p) for p in check_folder(config_copy).problems]
    assert any("holiday.yml:1: warning: not read" in p for p in problems), problems


def test_true_is_not_a_ring_time(config_copy: Path) -> None:
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, "timeout: 60", "timeout: true")
    errors = _relative(errors_of(config_copy), config_copy)
    assert any(e.startswith(f"dialplans/main.yaml:{line_of(main, 'timeout: true')}:")
               for e in errors), errors  # fmt: skip


def test_a_twilio_number_in_an_unknown_region_is_refused(config_copy: Path) -> None:
    controller = config_copy / "config" / "controller.yaml"
    edit(controller, '{line: "12345", region: xiamen}', '{line: "12345", region: xiamenn}')
    edit(controller, '{line: "12315", region: fuzhou}', '{line: "99999", region: fuzhou}')
    errors = errors_of(config_copy)
    assert any(f"controller.yaml:{line_of(controller, 'xiamenn')}: error:" in e
               and "unknown region 'xiamenn'" in e for e in errors), errors  # fmt: skip
    assert any(f"controller.yaml:{line_of(controller, '99999')}: error:" in e
               and "unknown line '99999'" in e for e in errors), errors  # fmt: skip


def _relative(errors: list[str], root: Path) -> list[str]:
    return [e.replace(f"{root}/", "") for e in errors]


@pytest.mark.parametrize("choice", ['"x"', '"12"'])
def test_a_choice_no_caller_can_press_is_refused(config_copy: Path, choice: str) -> None:
    # "x" is no key; "12" is two keys where the step takes one (max_digits 1)
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, 'choices: {"1": police', f"choices: {{{choice}: police")
    errors = _relative(errors_of(config_copy), config_copy)
    assert any(e.startswith(f"dialplans/main.yaml:{line_of(main, choice)}:")
               and "can never be pressed" in e for e in errors), errors  # fmt: skip


def test_a_window_date_with_a_time_is_refused(config_copy: Path) -> None:
    hotline = config_copy / "config" / "hotline.yaml"
    edit(hotline, "prompt_until: 2022-02-28", "prompt_until: 2022-02-28T00:00:00+14:00")
    errors = _relative(errors_of(config_copy), config_copy)
    assert any(e.startswith(f"config/hotline.yaml:{line_of(hotline, 'prompt_until')}:")
               and "a date only" in e for e in errors), errors  # fmt: skip


def test_a_twilio_number_may_stand_for_any_number_routing_knows(config_copy: Path) -> None:
    controller = config_copy / "config" / "controller.yaml"
    edit(controller, '{line: "12345", region: fuzhou}', '{line: "059112345", region: fuzhou}')
    edit(controller, '{line: "12345", region: xiamen}', '{line: "110", region: xiamen}')
    assert errors_of(config_copy) == []


def test_a_quoted_window_date_with_a_time_is_refused_too(config_copy: Path) -> None:
    hotline = config_copy / "config" / "hotline.yaml"
    edit(hotline, "retired_on: 2021-12-01", 'retired_on: "2021-12-01T00:00:00+14:00"')
    errors = _relative(errors_of(config_copy), config_copy)
    assert any("a date only" in e for e in errors), errors


def test_a_collect_choice_of_hash_is_refused(config_copy: Path) -> None:
    # '#' ends GET DATA's and <Gather>'s input: it never comes back as a key
    overflow = config_copy / "dialplans" / "overflow.yaml"
    edit(overflow, 'choices: {"1": callback}', 'choices: {"#": callback}')
    errors = _relative(errors_of(config_copy), config_copy)
    assert any(e.startswith(f"dialplans/overflow.yaml:{line_of(overflow, 'choices')}:")
               and "can never be pressed" in e for e in errors), errors  # fmt: skip


def test_a_shortcut_of_hash_is_refused(config_copy: Path) -> None:
    main = config_copy / "dialplans" / "main.yaml"
    edit(main, '"0": emergency_menu}', '"0": emergency_menu, "#": enterprise}')
    errors = _relative(errors_of(config_copy), config_copy)
    assert any(e.startswith(f"dialplans/main.yaml:{line_of(main, 'shortcuts')}:")
               for e in errors), errors  # fmt: skip


def test_a_twilio_number_is_checked_as_the_webhooks_route_it(config_copy: Path) -> None:
    # Pingtan's DID given Fuzhou as its region: Fuzhou wins, and the DID is unknown there
    controller = config_copy / "config" / "controller.yaml"
    edit(controller, '{line: "12315", region: fuzhou}', '{line: "059123112345", region: fuzhou}')
    errors = errors_of(config_copy)
    assert any("unknown line '059123112345'" in e for e in errors), errors
