"""Prompt audio: which files the flows need, and real rendering with espeak-ng and sox."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ivr.core.routing import Hotline
from ivr.render import render, sound_files, spoken


def test_per_line_prompts_only_for_lines_that_play_them(hotline: Hotline) -> None:
    names = {s.name for s in sound_files(hotline)}
    assert "transition_notice-12358" in names  # retired line
    assert "transition_notice-12315" not in names  # dual line: never plays it
    assert "dual_line_greeting-12315" in names
    assert "sub_centre_greeting-12366" in names
    assert {"greeting_12345", "survey_question", "emergency_menu"} <= names
    texts = {s.name: s.text for s in sound_files(hotline)}
    assert texts["transition_notice-12358"].startswith("价格监督热线12358")


def test_numbers_are_spoken_digit_by_digit() -> None:
    assert spoken("请改拨12345。") == "请改拨1 2 3 4 5。"
    assert spoken("按1") == "按1"


def test_render_writes_8khz_mono_wav_and_skips_what_is_current(
    hotline: Hotline, tmp_path: Path
) -> None:
    written = render(hotline, tmp_path, progress=False)
    assert written == len(sound_files(hotline))
    info = subprocess.run(
        ["soxi", str(tmp_path / "greeting_12345.wav")], capture_output=True, text=True, check=True
    ).stdout
    assert "Sample Rate    : 8000" in info and "Channels       : 1" in info
    assert render(hotline, tmp_path, progress=False) == 0
    (tmp_path / "survey_thanks.wav").unlink()
    assert render(hotline, tmp_path, progress=False) == 1
