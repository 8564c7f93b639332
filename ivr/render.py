"""Placeholder audio for the prompt catalog: espeak-ng speaks, sox makes it 8 kHz.

Real recordings replace these files one for one (same names, 8 kHz mono 16-bit WAV).
A manifest records the text each file was rendered from, so a changed text is noticed
and only what changed is rendered again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ivr.core.dialplan import Collect, Play, Survey, edges
from ivr.core.routing import FLOW_FOR_MODE, REQUIRED_FLOWS, Hotline

SOUNDS = Path("prompts") / "sounds"
MANIFEST = "manifest.json"
VOICE = "cmn"  # espeak-ng's Mandarin
SPEED = 250  # words a minute: callers want a person, not a long prompt
_DIGIT_RUN = re.compile(r"[0-9]{3,}")


@dataclass(frozen=True)
class SoundFile:
    name: str  # file name without .wav: the id, or <id>-<line> for per-line prompts
    prompt: str
    text: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{VOICE}|{SPEED}|{self.text}".encode()).hexdigest()[:16]


def sound_files(hotline: Hotline) -> list[SoundFile]:
    """Every file the flows can play: per-line prompts once for each line that uses them."""
    catalog = hotline.catalog.prompts
    used_by_flow = {flow_id: _prompts_reached(hotline, flow_id) for flow_id in hotline.flows}
    files: dict[str, SoundFile] = {}
    for flow_id in REQUIRED_FLOWS:
        for prompt in used_by_flow.get(flow_id, set()):
            if prompt in catalog and not catalog[prompt].per_line:
                files[prompt] = SoundFile(prompt, prompt, catalog[prompt].zh)
    for number, line in hotline.directory.lines.items():
        fields = {"line": number, "line_name": line.name, "department": line.department}
        for prompt in used_by_flow.get(FLOW_FOR_MODE[line.mode], set()):
            entry = catalog.get(prompt)
            if entry and entry.per_line:
                name = f"{prompt}-{number}"
                files[name] = SoundFile(name, prompt, entry.zh.format_map(fields))
    return sorted(files.values(), key=lambda f: f.name)


def _prompts_reached(hotline: Hotline, start: str) -> set[str]:
    """Prompts of a flow and of every flow it can go on to."""
    seen_flows, todo, prompts = {start}, [start], set()
    while todo:
        flow = hotline.flows.get(todo.pop())
        if flow is None:
            continue
        for step in flow.steps:
            if isinstance(step, Play | Collect | Survey):
                prompts.add(step.prompt)
            for ref in edges(step, flow.following(step.id)):
                if ref.startswith("@") and ref[1:] not in seen_flows:
                    seen_flows.add(ref[1:])
                    todo.append(ref[1:])
    return prompts


def missing_or_stale(hotline: Hotline, folder: Path) -> tuple[list[SoundFile], list[SoundFile]]:
    manifest = _read_manifest(folder)
    missing, stale = [], []
    for sound in sound_files(hotline):
        if not (folder / f"{sound.name}.wav").is_file():
            missing.append(sound)
        elif manifest.get(sound.name) not in (None, sound.digest):
            stale.append(sound)
    return missing, stale


def render(hotline: Hotline, folder: Path, *, force: bool = False, progress: bool = True) -> int:
    """Render what is missing or out of date; returns how many files were written."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (Debian: apt-get install espeak-ng sox)")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(folder)
    todo = [
        s
        for s in sound_files(hotline)
        if force or manifest.get(s.name) != s.digest or not (folder / f"{s.name}.wav").is_file()
    ]
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as scratch:
        for sound in tqdm(todo, desc="rendering prompts", unit="file", disable=not progress):
            raw = Path(scratch) / "raw.wav"
            subprocess.run(
                ["espeak-ng", "-v", VOICE, "-s", str(SPEED), "-w", str(raw), spoken(sound.text)],
                check=True,
                capture_output=True,
                timeout=60,
            )
            # Asterisk plays 8 kHz mono 16-bit WAV without transcoding; gain -3 dB
            # keeps espeak's peaks from clipping in the resampler.
            subprocess.run(
                [
                    "sox",
                    str(raw),
                    "-r",
                    "8000",
                    "-c",
                    "1",
                    "-b",
                    "16",
                    str(folder / f"{sound.name}.wav"),
                    "gain",
                    "-3",
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
            manifest[sound.name] = sound.digest
            (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return len(todo)


def spoken(text: str) -> str:
    """Service numbers are said digit by digit (一二三四五), as callers dial them."""
    return _DIGIT_RUN.sub(lambda m: " ".join(m.group(0)), text)


def _read_manifest(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
