"""The SIPp phone harness's own parts (tests/harness/phone.py), on text captured from SIPp
3.6 and Asterisk 22: the scenario it writes, the message trace it reads, the body readers."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from tests.harness.phone import (
    PACKAGES,
    SippPhone,
    dialog_state,
    digium_presence,
    message_summary,
    parse_trace,
    pidf,
    pidf_note,
    scenario,
    voice_message,
)

NOTIFY = """\
NOTIFY sip:phone@127.0.0.2:56559 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:45967;rport;branch=z9hG4bKPj81a3
From: <sip:phone1000@127.0.0.1>;tag=c7b54dcc
To: <sip:phone@127.0.0.2>;tag=31070-1
Call-ID: 1-31070@127.0.0.2
CSeq: 3352 NOTIFY
Event: message-summary
Subscription-State: active;expires=600
Content-Type: application/simple-message-summary
Content-Length:    48

Messages-Waiting: yes
Voice-Message: 2/1 (0/0)
"""

TRACE = f"""\
----------------------------------------------- 2026-12-08 00:19:15.647530
UDP message sent (120 bytes):

SUBSCRIBE sip:phone1000@127.0.0.1:45967 SIP/2.0
Call-ID: 1-31070@127.0.0.2
CSeq: 1 SUBSCRIBE
Content-Length: 0


----------------------------------------------- 2026-12-08 00:19:15.647789
UDP message received [615] bytes :

{NOTIFY}
----------------------------------------------- 2026-12-08 00:19:15.647840
UDP message sent (290 bytes):

SIP/2.0 200 OK
"""

DIALOG = """<?xml version="1.0" encoding="UTF-8"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="2" state="full" entity="sip:1234@127.0.0.1:44433">
 <dialog id="1234" direction="recipient">
  <state>early</state>
 </dialog>
</dialog-info>
"""  # noqa: E501

PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence entity="sip:1000@127.0.0.1:47687" xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid">
 <note>Ready</note>
 <tuple id="1000"><status><basic>open</basic></status></tuple>
 <tuple id="digium-presence">
  <status><digium_presence type="dnd">back at 3</digium_presence></status>
 </tuple>
 <dm:person />
</presence>
"""  # noqa: E501


@pytest.mark.parametrize("event", sorted(PACKAGES))
def test_the_scenario_is_sipp_xml_subscribing_with_a_desk_phones_headers(event: str) -> None:
    text = scenario(event, idle=30, user_agent="Acme T42")
    root = ElementTree.fromstring(text.encode("iso-8859-1"))
    sends = [e.text or "" for e in root.iter("send")]
    subscribe, unsubscribe = (s for s in sends if s.lstrip().startswith("SUBSCRIBE"))
    for line in (f"Event: {event}", f"Accept: {PACKAGES[event]}", "User-Agent: Acme T42"):
        assert line in subscribe and line in unsubscribe
    assert "Expires: 600" in subscribe and "CSeq: 1 SUBSCRIBE" in subscribe
    assert "Expires: 0" in unsubscribe and "CSeq: 2 SUBSCRIBE" in unsubscribe
    assert ";tag=[$totag]" in unsubscribe
    (loop,) = [e for e in root.iter("recv") if e.get("request") == "NOTIFY" and e.get("optional")]
    assert loop.get("timeout") == "30000" and loop.get("ontimeout") == "unsub"


def test_an_unknown_event_package_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="dialog, presence, message-summary"):
        SippPhone("refer", "1234", ("127.0.0.1", 5060))


def test_the_trace_gives_each_complete_message_with_its_time() -> None:
    messages = parse_trace(TRACE)
    # The 200 OK still being written (no blank line after it yet) is left out.
    assert [(way, msg.split("\n", 1)[0]) for _, way, msg in messages] == [
        ("sent", "SUBSCRIBE sip:phone1000@127.0.0.1:45967 SIP/2.0"),
        ("received", "NOTIFY sip:phone@127.0.0.2:56559 SIP/2.0"),
    ]
    assert messages[1][0] - messages[0][0] == pytest.approx(0.000259, abs=1e-6)
    assert parse_trace(TRACE + "\n\n")[-1][2] == "SIP/2.0 200 OK\n"


def test_the_body_readers_read_what_a_phone_reads() -> None:
    body = NOTIFY.split("\n\n", 1)[1]
    assert message_summary(body) == {"Messages-Waiting": "yes", "Voice-Message": "2/1 (0/0)"}
    assert voice_message(body) == "2/1 (0/0)"
    assert dialog_state(DIALOG) == "early"
    assert pidf(PIDF).basic == "open"
    assert (pidf_note(PIDF), digium_presence(PIDF), pidf(PIDF).message) == (
        "Ready",
        "dnd",
        "back at 3",
    )
