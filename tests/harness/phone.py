"""A desk phone played by SIPp (Debian's ``sip-tester``): a real SIP user agent nobody here
wrote, subscribed to one event package on one Asterisk, recording every NOTIFY it receives.

Theory of operation. One :class:`SippPhone` is one SIPp process running one call of the
scenario :func:`scenario` writes (one subscription = one SIP dialog, so a phone watching a
hint, a presence and a mailbox is three of them, as a desk phone's three subscriptions are):

1. ``SUBSCRIBE`` with ``Event`` and ``Accept`` as desk phones send them (:data:`PACKAGES`);
   the Asterisk endpoint is identified by the phone's address (pjsip ``identify``), no digest.
2. A loop: every ``NOTIFY`` is answered ``200 OK``; the loop ends when nothing came for
   ``idle`` seconds (the bound), or at once when the harness sends the dialog an ``INFO``
   (:meth:`SippPhone.stop`: SIPp routes it to the call by its Call-ID; it is not answered,
   since SIPp would send the answer to Asterisk, its one remote).
3. ``SUBSCRIBE`` with ``Expires: 0`` in the dialog (the To tag Asterisk gave, CSeq 2), its
   ``200 OK`` and the final ``terminated`` NOTIFY, answered; SIPp exits 0.

SIPp logs every message it sends and receives with a time stamp (``-trace_msg``); the
harness parses that file (:func:`parse_trace`), so a NOTIFY's arrival time is SIPp's own
reception time, not when Python looked. SIPp runs on a 127.0.0.x loopback address of its own
(Asterisk's ``identify`` tells phones from pbxmesh, which is 127.0.0.1) and its control port
on a free port (SIPp's default 8888 would make two phones collide).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from xml.etree import ElementTree

__all__ = [
    "DIGIUM_UA",
    "GENERIC_UA",
    "PACKAGES",
    "PHONE_MODULES",
    "Desk",
    "Notify",
    "Pidf",
    "SippPhone",
    "desk_phone",
    "dialog_state",
    "digium_presence",
    "message_summary",
    "parse_trace",
    "phone_pjsip",
    "pidf",
    "pidf_note",
    "scenario",
    "sipp_missing_reason",
    "voice_message",
]

#: Event package -> the Accept header a desk phone sends for it.
PACKAGES = {
    "dialog": "application/dialog-info+xml",
    "presence": "application/pidf+xml",
    "message-summary": "application/simple-message-summary",
}

#: A desk phone of no brand Asterisk singles out.
GENERIC_UA = "pbxmesh-test-phone (SIPp)"
#: What a Digium phone sends: Asterisk adds presence (DND, away, the note) to its PIDF only for
#: a User-Agent containing "digium" (res_pjsip_pidf_digium_body_supplement).
DIGIUM_UA = "Digium D65 2_9_4_3 (SIPp)"

#: What Asterisk loads for phones to subscribe to hints, presence and mailboxes (besides
#: res_pjsip itself and its pubsub core).
PHONE_MODULES = (
    "res_pjsip_exten_state",
    "res_pjsip_dialog_info_body_generator",
    "res_pjsip_pidf_body_generator",
    "res_pjsip_xpidf_body_generator",
    "res_pjsip_pidf_digium_body_supplement",
    "res_pjsip_pidf_eyebeam_body_supplement",
    "res_pjsip_mwi",
    "res_pjsip_mwi_body_generator",
)


def phone_pjsip(address: str, context: str, mailbox: str = "1000@default") -> str:
    """pjsip.conf sections of a phone identified by ``address``: it subscribes to the hints of
    ``context`` and, through its AOR ``phone1000``, to ``mailbox``."""
    return (
        "\n[phone]\ntype = endpoint\n"
        f"context = {context}\nsubscribe_context = {context}\nallow_subscribe = yes\n"
        "disallow = all\nallow = ulaw\naors = phone1000\n\n"
        f"[phone1000]\ntype = aor\nmailboxes = {mailbox}\n\n"
        f"[phone]\ntype = identify\nendpoint = phone\nmatch = {address}\n"
    )


def sipp_missing_reason() -> str | None:
    """Why no SIPp phone can run here, or None when one can."""
    if shutil.which("sipp") is None:
        return "no sipp: scripts/setup.sh installs Debian's sip-tester (apt-get install sip-tester)"
    return None


_SUBSCRIBE = """\
SUBSCRIBE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
From: <sip:phone@[local_ip]>;tag=[pid]-[call_number]
To: <sip:[service]@[remote_ip]>{to_tag}
Call-ID: [call_id]
CSeq: {cseq} SUBSCRIBE
Contact: <sip:phone@[local_ip]:[local_port]>
Max-Forwards: 70
Event: {event}
Accept: {accept}
Expires: {expires}
Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, SUBSCRIBE, INFO
User-Agent: {user_agent}
Content-Length: 0

"""

_OK = """\
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

"""


def scenario(event: str, idle: float, expires: int = 600, user_agent: str = GENERIC_UA) -> str:
    """The SIPp scenario (XML) of one subscription to ``event``; see the module docstring."""
    accept = PACKAGES[event]
    idle_ms = int(idle * 1000)

    def cdata(text: str) -> str:
        return f"<![CDATA[\n{text}]]>"

    subscribe = _SUBSCRIBE.format(
        to_tag="", cseq=1, event=event, accept=accept, expires=expires, user_agent=user_agent
    )
    unsubscribe = _SUBSCRIBE.format(
        to_tag=";tag=[$totag]", cseq=2, event=event, accept=accept, expires=0, user_agent=user_agent
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="pbxmesh test phone: {event}">
  <send retrans="500">{cdata(subscribe)}</send>
  <recv response="200">
    <action>
      <ereg regexp=";tag=([^;&gt; ]+)" search_in="hdr" header="To:" assign_to="junk,totag"/>
    </action>
  </recv>
  <label id="wait"/>
  <recv request="NOTIFY" optional="true" next="notified" timeout="{idle_ms}" ontimeout="unsub"/>
  <recv request="INFO" next="unsub"/>
  <label id="notified"/>
  <send next="wait">{cdata(_OK)}</send>
  <label id="unsub"/>
  <send retrans="500">{cdata(unsubscribe)}</send>
  <recv response="200"/>
  <recv request="NOTIFY" timeout="5000" ontimeout="end"/>
  <send>{cdata(_OK)}</send>
  <label id="end"/>
  <Reference variables="junk"/>
</scenario>
"""


@dataclass(frozen=True)
class Notify:
    """One NOTIFY the phone received: its arrival (SIPp's clock, seconds since the epoch),
    its Event and Subscription-State headers, and its body."""

    at: float
    event: str
    state: str
    body: str


_TRACE_HEAD = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d)[ \t](\d\d:\d\d:\d\d\.\d+)[^\n]*\n"
    r"(\w+) message (sent|received)",
    re.M,
)


def parse_trace(text: str) -> list[tuple[float, str, str]]:
    """SIPp's ``-trace_msg`` file as (time, "sent"/"received", message) per message; a message
    still being written (the last, when its blank-line end is missing) is left out."""
    out: list[tuple[float, str, str]] = []
    heads = list(_TRACE_HEAD.finditer(text))
    for i, m in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        chunk = text[m.end() : end]
        at = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S.%f").timestamp()
        _, _, message = chunk.partition(":\n\n")
        if i + 1 == len(heads) and not message.endswith("\n\n"):
            continue
        out.append((at, m.group(4), message.strip("\n") + "\n"))
    return out


def _header(message: str, name: str) -> str:
    head = message.split("\n\n", 1)[0]
    m = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\r?$", head, re.M | re.I)
    return m.group(1).strip() if m else ""


def _body(message: str) -> str:
    head, sep, body = message.replace("\r\n", "\n").partition("\n\n")
    length = _header(head + "\n", "Content-Length")
    return body[: int(length)] if sep and length.isdigit() else body


class SippPhone:
    """One subscription of a SIPp phone on ``address`` to ``target`` (an extension with a
    hint, or the phone's own AOR for message-summary) of the Asterisk at ``server``."""

    def __init__(
        self,
        event: str,
        target: str,
        server: tuple[str, int],
        address: str = "127.0.0.2",
        idle: float = 120.0,
        user_agent: str = GENERIC_UA,
        netns: str | None = None,
    ) -> None:
        if event not in PACKAGES:
            raise ValueError(f"no such event package {event!r}: one of {', '.join(PACKAGES)}")
        self.event, self.target, self.server, self.address = event, target, server, address
        self.idle, self.user_agent, self.netns = idle, user_agent, netns
        self.workdir = Path(tempfile.mkdtemp(prefix="pbxm-sipp-"))
        self.port = _free_udp_port(address)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def trace_path(self) -> Path:
        return self.workdir / "messages.log"

    def start(self) -> None:
        """Start SIPp: it subscribes at once (wait for it with :meth:`wait_subscribed`)."""
        (self.workdir / "phone.xml").write_text(
            scenario(self.event, self.idle, user_agent=self.user_agent)
        )
        with open(self.workdir / "sipp.out", "wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(["ip", "netns", "exec", self.netns] if self.netns else []),
                    "sipp",
                    f"{self.server[0]}:{self.server[1]}",
                    "-sf",
                    str(self.workdir / "phone.xml"),
                    "-s",
                    self.target,
                    "-i",
                    self.address,
                    "-p",
                    str(self.port),
                    "-ci",
                    self.address,
                    "-cp",
                    str(_free_udp_port(self.address)),
                    "-m",
                    "1",
                    "-nostdin",
                    "-trace_msg",
                    "-message_file",
                    str(self.trace_path),
                    "-trace_err",
                    "-error_file",
                    str(self.workdir / "errors.log"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    def messages(self) -> list[tuple[float, str, str]]:
        try:
            return parse_trace(self.trace_path.read_text(errors="replace"))
        except FileNotFoundError:
            return []

    def notifies(self) -> list[Notify]:
        """Every NOTIFY received so far, in order."""
        return [
            Notify(at, _header(msg, "Event"), _header(msg, "Subscription-State"), _body(msg))
            for at, way, msg in self.messages()
            if way == "received" and msg.startswith("NOTIFY ")
        ]

    def call_id(self) -> str | None:
        for _, way, msg in self.messages():
            if way == "sent" and msg.startswith("SUBSCRIBE "):
                return _header(msg, "Call-ID")
        return None

    def subscribed(self) -> bool:
        """Asterisk answered 200 to the SUBSCRIBE and sent its first NOTIFY."""
        answered = any(
            way == "received" and msg.startswith("SIP/2.0 200") for _, way, msg in self.messages()
        )
        return answered and bool(self.notifies())

    async def wait_subscribed(self, within: float = 10.0) -> Notify:
        """Wait for the subscription's first NOTIFY (Asterisk's current state) and return it."""
        await self.wait_for(lambda n: True, within, "the subscription's first NOTIFY")
        return self.notifies()[0]

    async def wait_for(
        self, match: Callable[[Notify], bool], within: float, what: str, after: int = 0
    ) -> Notify:
        """The first NOTIFY from the ``after``-th on for which ``match`` is true."""
        end = time.monotonic() + within
        while True:
            for n in self.notifies()[after:]:
                if match(n):
                    return n
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"SIPp phone ({self.event}) exited:\n{self.log()}")
            if time.monotonic() > end:
                bodies = "\n---\n".join(n.body for n in self.notifies()[after:]) or "(none)"
                raise AssertionError(
                    f"not within {within}s: {what} (NOTIFY bodies of {self.event}:\n{bodies})"
                )
            await asyncio.sleep(0.02)

    async def wait_value(
        self, read: Callable[[str], object], want: object, within: float, what: str, after: int = 0
    ) -> Notify:
        """The first NOTIFY from the ``after``-th on whose body ``read`` reads as ``want``."""
        return await self.wait_for(lambda n: read(n.body) == want, within, what, after)

    def stop(self, timeout: float = 10.0) -> int:
        """Ask the phone to unsubscribe (an INFO in its dialog) and wait for SIPp to exit
        after Expires: 0 and the final NOTIFY; return SIPp's exit status (0: all went as the
        scenario says). SIPp is killed if it does not exit within ``timeout``."""
        if self.proc is None:
            return 0
        call_id = self.call_id()
        if call_id is not None and self.proc.poll() is None:
            info = (
                f"INFO sip:phone@{self.address}:{self.port} SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-pbxm-stop\r\n"
                "From: <sip:harness@127.0.0.1>;tag=stop\r\n"
                f"To: <sip:phone@{self.address}>\r\nCall-ID: {call_id}\r\n"
                "CSeq: 1 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
            )
            _send_udp(self.netns, info.encode(), (self.address, self.port))
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9

    def log(self) -> str:
        parts = []
        for name in ("sipp.out", "errors.log"):
            with contextlib.suppress(OSError):
                parts.append((self.workdir / name).read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _send_udp(netns: str | None, data: bytes, to: tuple[str, int]) -> None:
    """One datagram to ``to`` as seen from ``netns`` (None: our own)."""
    if netns is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(data, to)
        return
    code = (
        "import socket, sys\n"
        "socket.socket(2, 2).sendto(sys.stdin.buffer.read(), (sys.argv[1], int(sys.argv[2])))"
    )
    subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code, to[0], str(to[1])],
        input=data,
        check=True,
        timeout=10,
    )


def _free_udp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


# -- what a phone reads in a body ----------------------------------------------------------------
_DIALOG = "{urn:ietf:params:xml:ns:dialog-info}"
_PIDF = "{urn:ietf:params:xml:ns:pidf}"


def dialog_state(body: str) -> str | None:
    """The ``<state>`` of the dialog-info body's dialog (what lights a BLF key), or None."""
    root = ElementTree.fromstring(body)
    state = root.find(f"{_DIALOG}dialog/{_DIALOG}state")
    return state.text if state is not None else None


@dataclass(frozen=True)
class Pidf:
    """What a phone reads in a PIDF body: the basic status and note of the extension's tuple,
    and (for a Digium phone) the presence type and message Asterisk adds."""

    basic: str | None
    note: str | None
    presence: str | None
    message: str


def pidf(body: str) -> Pidf:
    root = ElementTree.fromstring(body)
    note = root.find(f"{_PIDF}note")
    basic = root.find(f"{_PIDF}tuple/{_PIDF}status/{_PIDF}basic")
    digium = root.find(f"{_PIDF}tuple/{_PIDF}status/{_PIDF}digium_presence")
    return Pidf(
        basic.text if basic is not None else None,
        note.text if note is not None else None,
        digium.get("type") if digium is not None else None,
        (digium.text or "") if digium is not None else "",
    )


def pidf_note(body: str) -> str | None:
    return pidf(body).note


def digium_presence(body: str) -> str | None:
    return pidf(body).presence


def voice_message(body: str) -> str | None:
    """The ``Voice-Message`` line's value (``new/old (urgent new/urgent old)``)."""
    return message_summary(body).get("Voice-Message")


def message_summary(body: str) -> dict[str, str]:
    """The message-summary body's lines as a dict (``Messages-Waiting``, ``Voice-Message``)."""
    out = {}
    for line in body.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


@dataclass
class Desk:
    """A desk phone's subscriptions: hint 1234 (dialog), hint 1000 (presence) as a generic
    phone and as a Digium phone, and its mailbox (message-summary, through AOR phone1000)."""

    dialog: SippPhone
    presence: SippPhone
    digium: SippPhone
    mwi: SippPhone

    def all(self) -> tuple[SippPhone, ...]:
        return (self.dialog, self.presence, self.digium, self.mwi)

    async def wait_subscribed(self, within: float = 10.0) -> None:
        for p in self.all():
            await p.wait_subscribed(within)

    def stop(self) -> list[int]:
        """Unsubscribe every subscription (Expires: 0); SIPp's exit statuses."""
        return [p.stop() for p in self.all()]


@contextlib.contextmanager
def desk_phone(
    server: tuple[str, int],
    address: str = "127.0.0.2",
    netns: str | None = None,
    blf: str = "1234",
    presence: str = "1000",
) -> Iterator[Desk]:
    """A :class:`Desk` on ``address`` (inside ``netns``) subscribed to the Asterisk at
    ``server``: hint ``blf`` (dialog), hint ``presence`` and AOR phone1000; always closed."""
    desk = Desk(
        SippPhone("dialog", blf, server, address, netns=netns),
        SippPhone("presence", presence, server, address, netns=netns),
        SippPhone("presence", presence, server, address, user_agent=DIGIUM_UA, netns=netns),
        SippPhone("message-summary", "phone1000", server, address, netns=netns),
    )
    try:
        for p in desk.all():
            p.start()
        yield desk
    finally:
        for p in desk.all():
            p.close()
