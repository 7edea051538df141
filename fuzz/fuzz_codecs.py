"""Coverage-guided fuzzing of the decoders with atheris (``pip install atheris``).

    python fuzz/fuzz_codecs.py frame    -runs=200000
    python fuzz/fuzz_codecs.py asterisk -runs=200000
    python fuzz/fuzz_codecs.py ami      -runs=200000
    python fuzz/fuzz_codecs.py sip      -runs=200000

Each input must decode or raise RemoteProtocolError; any other exception is a crash that
atheris reports with the input that caused it. A seed corpus is written from valid frames
(and, for ``asterisk``, from the captured res_corosync vectors when they are available).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from pbxmesh.eid import EID
    from pbxmesh.errors import RemoteProtocolError
    from pbxmesh.links.ami import codec as _ami_codec  # noqa: F401 - instrumented for the ami target
    from pbxmesh.links.sip import bodies as _sip_bodies  # noqa: F401 - instrumented for sip
    from pbxmesh.links.sip import message as _sip_message  # noqa: F401 - instrumented for sip
    from pbxmesh.links.sip import publication as _sip_publication  # noqa: F401 - for sip
    from pbxmesh.wire import asterisk, frame

E = EID.parse("02:00:00:00:00:01")


def _seeds(target: str) -> list[bytes]:
    if target == "frame":
        items = (frame.DeviceItem("Custom:a", 2, 7), frame.MwiItem("1000@default", 3, 1, 9))
        return [
            frame.encode(
                frame.Frame(type=frame.FrameType.CHANGES, origin=E, seq=1, name="pbx1", items=items)
            ),
            frame.encode(
                frame.Frame(
                    type=frame.FrameType.SNAPSHOT,
                    origin=E,
                    seq=2,
                    name="pbx1",
                    items=items,
                    as_of=9,
                    parts=2,
                ),
                signed=True,
            ),
            frame.encode(
                frame.Frame(
                    type=frame.FrameType.HEARTBEAT, origin=E, seq=3, name="n", interval_ms=1000
                )
            ),
        ]
    if target == "asterisk":
        seeds = [asterisk.encode_event(asterisk.AstPing(E))]
        vectors = (
            Path(__file__).resolve().parents[2] / "shared/vectors/asterisk-corosync-frames.jsonl"
        )
        if vectors.exists():
            seeds += [bytes.fromhex(json.loads(x)["hex"]) for x in vectors.read_text().splitlines()]
        return seeds
    if target == "ami":
        return [
            b"Asterisk Call Manager/13.0.0\r\nResponse: Success\r\nActionID: 1\r\n"
            b"Message: Authentication accepted\r\n\r\nEvent: DeviceStateChange\r\n"
            b"Privilege: call,all\r\nDevice: Custom:a\r\nState: INUSE\r\n\r\n"
        ]
    if target == "sip":
        body = (
            b'{"type":"devicestate","device":"PJSIP/1","state":"INUSE","cachable":1,'
            b'"eid":"02:00:00:00:00:0a"}'
        )
        return [
            b"PUBLISH sip:pbxmesh@127.0.0.1:5070 SIP/2.0\r\n"
            b"v: SIP/2.0/UDP 127.0.0.1:5061;rport;branch=z9hG4bKPj1\r\n"
            b"f: <sip:a@127.0.0.1>;tag=1\r\nt: <sip:a@127.0.0.1>\r\ni: c\r\n"
            b"CSeq: 2 PUBLISH\r\no: asterisk-devicestate\r\nSIP-If-Match: 0\r\n"
            b"Expires: 3600\r\nc: application/json\r\nl: %d\r\n\r\n%s" % (len(body), body),
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP [::1]:5061;rport=5061;received=::1;"
            b"branch=z9hG4bKPj1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:a@h>;tag=2\r\n"
            b"Call-ID: c\r\nCSeq: 2 PUBLISH\r\nSIP-ETag: 2\r\nContent-Length: 0\r\n\r\n",
        ]
    raise SystemExit(f"unknown target {target!r}; use frame, asterisk, ami or sip")


def _target(target: str):  # type: ignore[no-untyped-def]
    if target == "frame":

        def one(data: bytes) -> None:
            with contextlib.suppress(RemoteProtocolError):
                frame.decode(data)

        return one
    if target == "asterisk":

        def one(data: bytes) -> None:
            with contextlib.suppress(RemoteProtocolError):
                asterisk.decode_event(data)
            reader = asterisk.EventReader()
            reader.receive_data(data)
            with contextlib.suppress(RemoteProtocolError):
                while reader.next_event() is not asterisk.NEED_DATA:
                    pass

        return one
    if target == "sip":
        return _sip_target()
    from pbxmesh.links.ami.codec import CLOSED, NEED_DATA, AmiCodec, Role

    def one(data: bytes) -> None:
        # Both roles, fed whole and in two pieces: messages or RemoteProtocolError only.
        for role in (Role.CLIENT, Role.SERVER):
            for cut in (len(data), len(data) // 2):
                codec = AmiCodec(role)
                for piece in [p for p in (data[:cut], data[cut:]) if p] + [b""]:
                    codec.receive_data(piece)
                    for _ in range(10_000):
                        try:
                            event = codec.next_event()
                        except RemoteProtocolError:
                            continue
                        if event is NEED_DATA or event is CLOSED:
                            break

    return one


def _sip_target() -> Callable[[bytes], None]:
    from pbxmesh.links.sip import message as sip
    from pbxmesh.links.sip.publication import PublicationServer

    def one(data: bytes) -> None:
        # A datagram: a message or RemoteProtocolError; a request also goes through the
        # RFC 3903 server, which must answer it (never raise).
        try:
            msg = sip.decode_datagram(data)
        except RemoteProtocolError:
            msg = None
        if isinstance(msg, sip.Request):
            PublicationServer().handle(msg, 0.0)
            assert sip.decode_datagram(sip.encode(msg)) == msg
        # A stream, fed whole and in two pieces.
        for cut in (len(data), len(data) // 2):
            stream = sip.SipStream()
            for piece in [p for p in (data[:cut], data[cut:]) if p] + [b""]:
                stream.receive_data(piece)
                for _ in range(10_000):
                    try:
                        event = stream.next_event()
                    except RemoteProtocolError:
                        if stream.broken is not None:
                            break
                        continue
                    if event is sip.NEED_DATA or event is sip.CLOSED:
                        break

    return one


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    target = sys.argv.pop(1)
    corpus = Path(tempfile.mkdtemp(prefix=f"pbxmesh-fuzz-{target}-"))
    for i, seed in enumerate(_seeds(target)):
        (corpus / f"seed{i}").write_bytes(seed)
    atheris.Setup([sys.argv[0], *sys.argv[1:], str(corpus)], _target(target))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
