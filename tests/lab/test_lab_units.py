"""The lab's pure parts: configuration rendering, SIPp scenarios, log and CDR parsing.

No Asterisk, SIPp or root needed; the calls themselves are in test_lab_native.py.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath

import pytest

from ivr.lab import (
    CDR_FIELDS,
    CallPlan,
    Lab,
    LabConfig,
    LabConfigError,
    LabError,
    Seat,
    Trunk,
    parse_cdrs,
    parse_message_log,
    render_config,
)
from ivr.lab.hotline import HotlineLab
from ivr.lab.sipp import call_scenario, seat_scenario

STATE = PurePosixPath("/var/lib/ivr-lab/unit")
MODDIR = "/usr/lib/x86_64-linux-gnu/asterisk/modules"
PROVISION = Path(__file__).resolve().parents[2] / "scripts" / "provision-lab"


def _render(config: LabConfig) -> dict[str, str]:
    return render_config(config, STATE, MODDIR)


def _section(conf: str, name: str) -> str:
    """The bodies of every ``[name]`` (or ``[name](template)``) in an Asterisk .conf text."""
    pattern = rf"^\[{re.escape(name)}\](\([^)]*\))?\n(.*?)(?=^\[|\Z)"
    bodies = [m.group(2) for m in re.finditer(pattern, conf, re.M | re.S)]
    assert bodies, f"no [{name}] section"
    return "".join(bodies)


# ------------------------------------------------------------------------ config


def test_every_template_renders_without_leftover_marks() -> None:
    files = _render(LabConfig())
    assert "{{" not in "".join(files.values())
    assert f"astetcdir => {STATE}/etc" in files["asterisk.conf"]
    assert f"astmoddir => {MODDIR}" in files["asterisk.conf"]
    assert "noload => chan_dahdi.so" in files["modules.conf"]
    assert "icesupport = no" in files["rtp.conf"]
    assert "bind = 127.0.0.1:5060" in files["pjsip.conf"]


def test_every_endpoint_binds_rtp_to_loopback() -> None:
    # Without these two settings each RTP stream waits on a host look-up.
    pjsip = _render(LabConfig())["pjsip.conf"]
    template = _section(pjsip, "lab-endpoint")
    assert "media_address = 127.0.0.1" in template
    assert "bind_rtp_to_media_address = yes" in template
    endpoints = re.findall(r"^\[([\w-]+)\]\(lab-endpoint\)$", pjsip, re.M)
    assert endpoints == ["pstn", "seat-a", "seat-b", "seat-c"]


def test_seats_and_trunks_become_endpoints_identified_by_address() -> None:
    config = LabConfig(
        seats=(Seat("sub-12366", "127.0.0.9", port=5080),),
        trunks=(Trunk("fuzhou", "127.0.0.1"), Trunk("pingtan", "127.0.0.11", context="pt")),
    )
    pjsip = _render(config)["pjsip.conf"]
    assert "contact = sip:sub-12366@127.0.0.9:5080" in _section(pjsip, "sub-12366")
    assert "match = 127.0.0.11" in _section(pjsip, "pingtan-identify")
    assert "context = pt" in _section(pjsip, "pingtan")


def test_dialplan_and_queue_pieces_from_text_and_files(tmp_path: Path) -> None:
    glue = tmp_path / "glue.conf"
    glue.write_text("[from-file]\nexten => 1,1,Hangup()\n")
    config = LabConfig(
        extensions=("[from-text]\nexten => 2,1,Hangup()\n", glue),
        queues=("[q1]\nmember => PJSIP/seat-a\n",),
        variables={"AGI_URL": "agi://127.0.0.1:4573/route"},
    )
    files = _render(config)
    assert "[from-text]" in files["extensions.conf"]
    assert "[from-file]" in files["extensions.conf"]
    assert "AGI_URL = agi://127.0.0.1:4573/route" in _section(files["extensions.conf"], "globals")
    assert "member => PJSIP/seat-a" in _section(files["queues.conf"], "q1")


@pytest.mark.parametrize(
    "make",
    [
        lambda: Seat("a", "10.0.0.2"),  # not loopback
        lambda: Seat("a", "::1"),  # IPv6 stays out of the lab
        lambda: Seat("bad name", "127.0.0.2"),
        lambda: Seat("a", "127.0.0.2", reply=180),
        lambda: Trunk(dtmf_mode="whistle"),
        lambda: LabConfig(seats=(Seat("a", "127.0.0.1"),)),  # Asterisk's own address:port
        lambda: LabConfig(seats=(Seat("a", "127.0.0.2"), Seat("b", "127.0.0.2", port=5070))),
        lambda: LabConfig(seats=(Seat("pstn", "127.0.0.2"),)),  # clashes with the trunk
        lambda: LabConfig(sip_host="192.168.1.1"),
    ],
)
def test_bad_configurations_are_refused(make: object) -> None:
    with pytest.raises(LabConfigError):
        make()  # type: ignore[operator]


def test_state_folder_must_be_inside_the_root(tmp_path: Path) -> None:
    with pytest.raises(LabError):
        Lab(tmp_path / "root", tmp_path / "elsewhere")
    lab = Lab(tmp_path / "root")
    assert lab.state_dir == tmp_path / "root/var/lib/ivr-lab/default"
    assert lab.cdr_csv == lab.state_dir / "log/cdr-csv/Master.csv"


# ---------------------------------------------------------------------- scenarios


def _labels_resolve(xml: str) -> ET.Element:
    root = ET.fromstring(xml)
    labels = {el.get("id") for el in root.iter("label")}
    targets = {el.get(attr) for el in root.iter() for attr in ("next", "ontimeout") if el.get(attr)}
    assert targets <= labels, f"jumps to missing labels: {targets - labels}"
    return root


@pytest.mark.parametrize(
    "seat",
    [
        Seat("s", "127.0.0.2"),
        Seat("s", "127.0.0.2", ring=2.5),
        Seat("s", "127.0.0.2", hold=1.0),
        Seat("s", "127.0.0.2", reply=486),
        Seat("s", "127.0.0.2", ring=1.0, reply=603),
    ],
)
def test_seat_scenarios_are_well_formed(seat: Seat) -> None:
    root = _labels_resolve(seat_scenario(seat))
    sent = " ".join(el.text or "" for el in root.iter("send"))
    assert f"SIP/2.0 {seat.reply} " in sent
    assert ("487 Request Terminated" in sent) == (seat.ring > 0)
    # SIPp refuses a scenario that assigns a variable it never uses, and vice versa.
    assigned = {v for el in root.iter("ereg") for v in el.get("assign_to", "").split(",")}
    used = set(re.findall(r"\[\$(\w+)\]", sent))
    assert assigned == used


def test_call_scenario_sends_info_digits_in_order() -> None:
    root = _labels_resolve(call_scenario(CallPlan(hold=5.0, dtmf="0#9", dtmf_at=1.0)))
    bodies = [el.text or "" for el in root.iter("send") if "INFO [next_url]" in (el.text or "")]
    assert [re.search(r"Signal=(.)", b).group(1) for b in bodies] == ["0", "#", "9"]  # type: ignore[union-attr]
    assert [re.search(r"CSeq: (\d+) INFO", b).group(1) for b in bodies] == ["2", "3", "4"]  # type: ignore[union-attr]


def test_call_scenario_rfc2833_offers_telephone_event() -> None:
    xml = call_scenario(CallPlan(dtmf="1#", dtmf_mode="rfc2833", dtmf_gap=0.4))
    # one play for all digits, 200 ms tones: separate plays would overlap streams
    assert xml.count("play_dtmf=") == 1
    assert 'play_dtmf="1#,200"' in xml
    assert "telephone-event/8000" in xml
    assert "telephone-event" not in call_scenario(CallPlan())


def test_call_plan_validation() -> None:
    with pytest.raises(ValueError):
        CallPlan(dtmf="x")
    with pytest.raises(ValueError):
        CallPlan(hold=1.0, dtmf="123", dtmf_at=0.5)  # digits outlast the call
    with pytest.raises(ValueError):
        CallPlan(headers={"X-Bad": "a\r\nInjected: 1"})
    assert "X-Region: 0591" in call_scenario(CallPlan(headers={"X-Region": "0591"}))


# ------------------------------------------------------------------ logs and CDRs

SIPP_LOG = """\
----------------------------------------------- 2026-01-02 03:04:05.000001
UDP message received [300] bytes :

INVITE sip:110@127.0.0.4:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1
From: "13900000001" <sip:13900000001@127.0.0.1>;tag=abc
t: <sip:110@127.0.0.4>
Call-ID: one@lab
CSeq: 100 INVITE
X-Long: first
 second
Content-Length: 3

v=0

----------------------------------------------- 2026-01-02 03:04:05.000200
UDP message sent (120 bytes):

SIP/2.0 180 Ringing
To: <sip:110@127.0.0.4>;tag=seat
CSeq: 100 INVITE
Content-Length: 0


----------------------------------------------- 2026-01-02 03:04:06.000000
Aborting call on unexpected message for Call-Id 'x'
"""


def test_message_log_parsing() -> None:
    invite, ringing = parse_message_log(SIPP_LOG)
    assert (invite.direction, invite.method, invite.request_user) == ("received", "INVITE", "110")
    assert invite.is_initial_invite
    assert invite.from_user == "13900000001"
    assert invite.to_user == "110"  # compact header name "t"
    assert invite.header("x-long") == "first second"
    assert invite.body == "v=0"
    assert (ringing.direction, ringing.status, ringing.cseq_method) == ("sent", 180, "INVITE")


def test_cdr_parsing_names_columns_and_keeps_extras() -> None:
    line = (
        '"","139","12345","lab-inbound","""x"" <139>","PJSIP/pstn-1","PJSIP/seat-a-2",'
        '"Dial","PJSIP/seat-a,20","2026-01-02 03:04:05","2026-01-02 03:04:05",'
        '"2026-01-02 03:04:09",4,4,"ANSWERED","DOCUMENTATION","1.2","key=0","more"\n'
    )
    (record,) = parse_cdrs(line)
    assert len(CDR_FIELDS) == 18
    assert record["clid"] == '"x" <139>'
    assert record["lastdata"] == "PJSIP/seat-a,20"
    assert (record["disposition"], record["userfield"], record["extra0"]) == (
        "ANSWERED",
        "key=0",
        "more",
    )


def test_provisioning_script_names_no_package_host() -> None:
    text = PROVISION.read_text()
    assert "://" not in text
    assert re.search(r"debootstrap --variant=minbase --include=asterisk \"\$\{SUITE\}\"", text)


def test_lab_sounds_follow_the_configuration_even_when_the_root_has_newer_ones(
    tmp_path: Path,
) -> None:
    # The root is shared: a bench installs its own greeting there, and the next
    # configuration's lab must play its own again, not whichever file is newer.
    config, root = tmp_path / "config", tmp_path / "root"
    sounds = config / "prompts" / "sounds"
    sounds.mkdir(parents=True)
    (sounds / "greeting.wav").write_bytes(b"ours, eight seconds")
    lab = HotlineLab.create(config, root)
    lab.install_sounds()
    installed = root / "usr/share/asterisk/sounds/ivr/greeting.wav"
    assert installed.read_bytes() == b"ours, eight seconds"
    installed.write_bytes(b"a bench's one second")  # newer than ours
    lab.install_sounds()
    assert installed.read_bytes() == b"ours, eight seconds"
