"""The `ivr` command as an admin uses it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.cli import main
from ivr.core.dialplan import json_schema
from ivr.paths import bundled_root


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def simulate_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, _ = run(capsys, "simulate", "--json", *args)
    assert code == 0
    return json.loads(out)


def test_check_bundled_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check")
    assert code == 0
    assert "ok — 10 regions, 32 legacy lines" in out


def test_check_broken_copy_fails_with_a_precise_message(
    capsys: pytest.CaptureFixture[str], config_copy: Path
) -> None:
    path = config_copy / "dialplans" / "sub_centre_line.yaml"
    path.write_text(path.read_text().replace("timeout: answer_timeout", "timeout: soon"))
    code, _, err = run(capsys, "check", str(config_copy))
    assert code == 1
    assert "dialplans/sub_centre_line.yaml:16: error: steps.3.dial.timeout" in err
    assert "would be refused" in err


def test_check_missing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "check", str(tmp_path / "nope"))
    assert code == 1 and "not a folder" in err


def test_simulate_json_has_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    result = simulate_json(
        capsys,
        "--to",
        "12358",
        "--from",
        "13912340000",
        "--trunk",
        "pingtan-ct",
        "--at",
        "2022-01-10T09:30:00",
    )
    assert result["line"] == "12358"
    assert result["mode"] == "whole_merge"
    assert result["region"] == "pingtan"
    assert result["prompts"] == ["transition_notice", "survey_question", "survey_thanks"]
    assert result["tags"]["original_line"] == "12358"
    assert result["target"] == {"kind": "seats", "id": "pingtan-12345"}
    assert result["fallbacks"] == []


def test_simulate_dial_result_applies_to_the_first_connect_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = simulate_json(
        capsys, "--to", "12315", "--region", "xiamen", "--dial-result", "noanswer"
    )
    assert result["target"] == {"kind": "seats", "id": "xiamen-12345"}
    assert result["fallbacks"] == [{"from": "xiamen-12315", "reason": "noanswer", "to": "seats"}]


def test_simulate_unknown_number_routes_as_12345_and_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = simulate_json(capsys, "--to", "96888", "--region", "longyan")
    assert (result["line"], result["mode"], result["known"]) == ("96888", "main", False)
    assert result["target"] == {"kind": "seats", "id": "longyan-12345"}
    assert "not a known line" in result["notes"][0]
    code, out, _ = run(capsys, "simulate", "--to", "96888")
    assert code == 0 and "routed as a call to 12345" in out


def test_simulate_keys_and_emergency(capsys: pytest.CaptureFixture[str]) -> None:
    result = simulate_json(capsys, "--to", "12345", "--keys", "01", "--region", "xiamen")
    assert result["target"]["kind"] == "emergency" and result["target"]["id"] == "110"
    assert result["mode"] == "main"


def test_simulate_emergency_mode(capsys: pytest.CaptureFixture[str]) -> None:
    result = simulate_json(capsys, "--to", "122", "--region", "zhangzhou")
    assert (result["mode"], result["target"]["kind"], result["target"]["id"]) == (
        "emergency",
        "emergency",
        "122",
    )


def test_simulate_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "simulate", "--to", "12345", "--region", "beijing")[0] == 2
    assert run(capsys, "simulate", "--to", "12345", "--keys", "1a")[0] == 2
    assert run(capsys, "simulate", "--to", "12345", "--at", "yesterday")[0] == 2


def test_simulate_on_a_broken_config_is_refused(
    capsys: pytest.CaptureFixture[str], config_copy: Path
) -> None:
    (config_copy / "prompts" / "catalog.yaml").write_text("prompts: [\n")
    code, _, err = run(capsys, "simulate", "--config", str(config_copy), "--to", "12345")
    assert code == 1 and "catalog.yaml:2: error: YAML" in err


def test_ivr_test_runs_the_bundled_cases(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "test")
    assert code == 0
    assert out.strip().splitlines()[-1].endswith(" passed, 0 failed")


def test_ivr_test_reports_a_failing_case(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n"
        "  - name: wrong on purpose\n"
        "    call: {to: '12366', region: xiamen, at: '2024-01-01T10:00:00'}\n"
        "    expect: {target: {kind: seats}}\n"
    )
    code, out, _ = run(capsys, "test", str(cases))
    assert code == 1
    assert f"FAIL {cases}:2 wrong on purpose" in out
    assert "target.kind: expected 'seats', got 'sub_centre'" in out


def test_ivr_test_refuses_a_malformed_case_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        "cases:\n  - name: x\n    call: {to: '12345', at: '2024-01-01T10:00'}\n"
        "    expect: {tagz: {}}\n"
    )
    code, _, err = run(capsys, "test", str(cases))
    assert code == 1
    assert f"{cases}:4: error: cases.0.expect.tagz: Extra inputs are not permitted" in err


def test_shipped_schema_matches_the_model() -> None:
    shipped = json.loads((bundled_root() / "dialplans" / "dialplan.schema.json").read_text())
    assert shipped == json_schema(), "run `ivr schema --write` after changing the model"
    assert "queue" in json.dumps(shipped["$defs"]["Queue"])


def test_installed_console_script() -> None:
    exe = shutil.which("ivr", path=str(Path(sys.executable).parent))
    assert exe, "the ivr command is installed with the package"
    done = subprocess.run(
        [exe, "simulate", "--to", "12366", "--region", "fuzhou", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout)["target"] == {"kind": "sub_centre", "id": "fuzhou-12366"}


# -- an operator's mistakes get one line each, never a traceback -----------------------


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["asterisk-glue", "--agi-url", "http://x:4573"], "is not agi://HOST[:PORT]"),
        (["serve", "--agi", "127.0.0.1:99999"], "port of 0-65535"),
        (["serve", "--redis", "foo://bar"], "is not a Redis URL"),
        (["stats", "--redis", "foo://bar"], "is not a Redis URL"),
    ],
)
def test_bad_options_are_refused_with_the_reason(
    capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2 and reason in err and "Traceback" not in err


def test_glue_into_a_file_that_is_not_a_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    taken = tmp_path / "extensions.conf"
    taken.write_text("")
    code, _, err = run(capsys, "asterisk-glue", "--out", str(taken))
    assert code == 2 and err.startswith("--out: File exists")


def serve_beside_a_taken_port(taken_by: str) -> tuple[int, subprocess.CompletedProcess[str]]:
    """`ivr serve` with its `taken_by` listener ("agi" or "http") on a port in use."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        listeners = {"agi": "127.0.0.1:0", "http": "127.0.0.1:0", taken_by: f"127.0.0.1:{port}"}
        done = subprocess.run(
            [sys.executable, "-m", "ivr.cli", "serve", "--agi", listeners["agi"],
             "--http", listeners["http"], "--redis", "redis://127.0.0.1:1/0"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    return port, done


def test_serve_on_a_port_in_use_says_which_listener() -> None:
    port, done = serve_beside_a_taken_port("agi")
    assert done.returncode == 1
    assert f"ivr serve: cannot start: FastAGI on 127.0.0.1:{port}: Address already in use" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_serve_on_an_http_port_in_use_says_so_and_leaves_nothing_running() -> None:
    port, done = serve_beside_a_taken_port("http")
    assert done.returncode == 1
    assert f"ivr serve: cannot start: HTTP on 127.0.0.1:{port}: Address already in use" in (
        done.stderr
    )
    # our line, not werkzeug's advice; and the FastAGI listener never said it was up
    assert "Either identify and stop that program" not in done.stderr
    assert "agi server listening" not in done.stderr
    assert "agi server stopped" not in done.stderr
    assert "Traceback" not in done.stderr


def test_a_listen_port_out_of_range_is_a_configuration_error(config_copy: Path) -> None:
    from ivr.config import ConfigError
    from ivr.settings import load_settings

    settings = config_copy / "config" / "controller.yaml"
    settings.write_text(
        settings.read_text().replace("listen: 127.0.0.1:4573", "listen: 127.0.0.1:99999")
    )
    with pytest.raises(ConfigError, match=r"controller\.yaml:.*port of 0-65535"):
        load_settings(config_copy)


def test_simulate_shows_the_moment_in_shanghai_time(capsys: pytest.CaptureFixture[str]) -> None:
    # 20:00 UTC on 28 February is already 1 March in Fuzhou: the window has closed
    result = simulate_json(capsys, "--to", "12358", "--at", "2022-02-28T20:00Z")
    assert result["at"] == "2022-03-01T04:00:00+08:00"


# -- ivr diff: what a change does, before it goes live ---------------------------------


def test_diff_shows_which_calls_go_elsewhere(
    capsys: pytest.CaptureFixture[str], config_copy: Path
) -> None:
    lines = config_copy / "config" / "lines.yaml"
    text = lines.read_text(encoding="utf-8")
    lines.write_text(text.replace("    seats: kept                 # assumption",
                                  "    seats: cancelled            # now", 1),
                     encoding="utf-8")  # fmt: skip
    code, out, _ = run(capsys, "diff", str(bundled_root()), str(config_copy))
    assert code == 1
    assert "12315 in xiamen\n" in out
    assert "target: {kind: kept_seats, id: xiamen-12315} -> {kind: seats, id: xiamen-12345}" in out
    assert "12345 in" not in out  # nothing else moved
    assert out.rstrip().endswith("10 call(s) would go otherwise")


def test_diff_shows_the_days_a_shorter_window_changes(
    capsys: pytest.CaptureFixture[str], config_copy: Path
) -> None:
    hotline = config_copy / "config" / "hotline.yaml"
    text = hotline.read_text(encoding="utf-8")
    hotline.write_text(text.replace("prompt_until: 2022-02-28", "prompt_until: 2022-01-31", 1),
                       encoding="utf-8")  # fmt: skip
    code, out, _ = run(capsys, "diff", str(bundled_root()), str(config_copy), "--at", "2022-01-10")
    assert code == 1
    # the transition prompt no longer plays in February: the days either side show it
    first = next(line for line in out.splitlines() if "facts:" in line)
    assert "2022-02-01" in first and "2022-02-28" in first and "2022-01-10" not in first
    assert "phase: transition" in first and "phase: after_transition" in first


def test_diff_of_the_same_configuration_is_empty(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diff", str(bundled_root()), str(bundled_root()))
    assert (code, out) == (0, "no call would go otherwise\n")


def test_diff_refuses_a_broken_folder_with_its_problems(
    capsys: pytest.CaptureFixture[str], config_copy: Path
) -> None:
    main_flow = config_copy / "dialplans" / "main.yaml"
    main_flow.write_text(main_flow.read_text() + "\n  - id: [\n", encoding="utf-8")
    code, _, err = run(capsys, "diff", str(bundled_root()), str(config_copy))
    assert code == 2
    assert "main.yaml:" in err and "nothing compared" in err


def test_simulate_refuses_a_number_that_is_no_number(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "simulate", "--to", "abc")
    assert code == 2 and "--to:" in err
    assert run(capsys, "simulate", "--to", "+86 591-12345")[0] == 0


def test_check_refuses_two_different_folders(
    capsys: pytest.CaptureFixture[str], config_copy: Path
) -> None:
    code, _, err = run(capsys, "check", str(config_copy), "--config", str(bundled_root()))
    assert code == 2 and "two folders given" in err
    assert run(capsys, "check", str(config_copy), "--config", str(config_copy))[0] == 0


def test_diff_sees_what_a_change_does_to_withheld_callers(
    capsys: pytest.CaptureFixture[str], config_copy: Path
) -> None:
    overflow = config_copy / "dialplans" / "overflow.yaml"
    text = overflow.read_text(encoding="utf-8")
    # the withheld caller's second queue, once answered, skips the survey
    answered = 'on: {answered: "@survey", noanswer: "@seats", busy: "@seats", failed: "@seats"}'
    assert text.count(answered) == 1
    overflow.write_text(text.replace(answered, answered.replace('"@survey"', "bye")),
                        encoding="utf-8")  # fmt: skip
    code, out, _ = run(capsys, "diff", str(bundled_root()), str(config_copy))
    assert code == 1
    changed = [line for line in out.splitlines() if line.startswith("  ")]
    assert changed and all("withheld number, first queue unanswered" in c for c in changed)
    assert "survey_question" in out
