"""The query commands (``members``, ``devices``, ``status``, ``publish`` …): each asks the
running node through its control API and prints a table, or JSON with ``--json``."""

from __future__ import annotations

import argparse
import datetime
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from .cli_common import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from .config import load_config
from .presence import check_presence_text, check_presentity, parse_presence
from .states import parse_state

__all__ = ["Client", "query"]


def query(args: argparse.Namespace) -> int:
    """Run a query command against the node that ``-c`` configures."""
    client = Client.from_config(args.config)
    by_name: dict[str, Callable[[], int]] = {
        "members": lambda: members(client, args.json),
        "channels": lambda: channels(client, args.json),
        "devices": lambda: devices(client, args.json, args.pattern),
        "mwi": lambda: mwi(client, args.json, args.pattern),
        "presence": lambda: presence(client, args.json, args.pattern),
        "hints": lambda: hints(client, args.json),
        "status": lambda: status(client, args.json),
        "publish": lambda: publish(client, args),
    }
    command = by_name.get(args.command)
    if command is None:
        raise CliError(f"unknown command {args.command}", EXIT_USAGE)
    return command()


class Client:
    """A small client of the control API (stdlib only, so the CLI starts fast)."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base
        self.token = token

    @classmethod
    def from_config(cls, path: str) -> Client:
        cfg = load_config(path)
        host, port = cfg.control.listen
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return cls(f"http://{host}:{port}/api/v1", cfg.control.token)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            raise CliError(str(message), EXIT_USAGE if exc.code == 400 else EXIT_FAILED) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CliError(
                f"node unreachable at {self.base} ({reason}); is `pbxmesh run` running?",
                EXIT_UNREACHABLE,
            ) from None


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _out(data: Any, as_json: bool, human: str) -> int:
    print(json.dumps(data, indent=2) if as_json else human)
    return 0


def members(client: Client, as_json: bool) -> int:
    full = client.request("GET", "/members?full=1")
    members = full["members"]
    if as_json:
        return _out(
            [
                {
                    k: m[k]
                    for k in (
                        "name",
                        "nodeid",
                        "address",
                        "eid",
                        "member",
                        "self",
                        "joined_at",
                        "trusted",
                        "kind",
                    )
                    if k in m
                }
                for m in members
            ],
            True,
            "",
        )
    rows = [
        [
            m["name"]
            + (" (this node)" if m["self"] else "")
            + (" (Asterisk on the res_corosync ring)" if m.get("kind") == "asterisk" else "")
            + (" (UNTRUSTED: not in [security.peers])" if m.get("trusted") is False else ""),
            m["nodeid"] or "-",
            m["address"] or "-",
            m["eid"] or "-",
            "Yes" if m["member"] else "No",
            datetime.datetime.fromtimestamp(m["joined_at"]).strftime("%Y-%m-%d %H:%M:%S")
            if m["joined_at"]
            else "-",
        ]
        for m in members
    ]
    head = f"view {full['view']}, quorate: {'yes' if full['quorate'] else 'NO'}"
    return _out(
        None,
        False,
        head + "\n" + _table(["NODE NAME", "ID", "ADDRESS", "EID", "MEMBER", "JOINED"], rows),
    )


def channels(client: Client, as_json: bool) -> int:
    chans = client.request("GET", "/channels")
    rows = [
        [c["name"], ",".join(c["publish"]) or "-", ",".join(c["subscribe"]) or "-"] for c in chans
    ]
    return _out(chans, as_json, _table(["EVENT CHANNEL", "PUBLISH", "SUBSCRIBE"], rows))


def devices(client: Client, as_json: bool, pattern: str | None) -> int:
    q = "?" + urllib.parse.urlencode({"pattern": pattern}) if pattern else ""
    devs = client.request("GET", "/devices" + q)
    rows = [
        [d["device"], d["state"], " ".join(f"{e}={s}" for e, s in d["origins"].items())]
        for d in devs
    ]
    return _out(devs, as_json, _table(["DEVICE", "STATE", "ORIGINS (EID=STATE)"], rows))


def mwi(client: Client, as_json: bool, pattern: str | None) -> int:
    q = "?" + urllib.parse.urlencode({"pattern": pattern}) if pattern else ""
    boxes = client.request("GET", "/mwi" + q)
    if as_json:
        return _out(
            [{k: b[k] for k in ("mailbox", "new", "old", "origin")} for b in boxes], True, ""
        )
    rows = [
        [
            b["mailbox"],
            str(b["new"]),
            str(b["old"]),
            f"{b['origin']} ({b['origin_name']})" if b["origin_name"] else b["origin"],
        ]
        for b in boxes
    ]
    return _out(boxes, False, _table(["MAILBOX", "NEW", "OLD", "ORIGIN"], rows))


def presence(client: Client, as_json: bool, pattern: str | None) -> int:
    q = "?" + urllib.parse.urlencode({"pattern": pattern}) if pattern else ""
    rows = client.request("GET", "/presence" + q)
    if as_json:
        keys = ("presentity", "state", "subtype", "message", "origin")
        return _out([{k: r[k] for k in keys} for r in rows], True, "")
    table = [
        [
            r["presentity"],
            r["state"],
            r["subtype"] or "-",
            r["message"] or "-",
            f"{r['origin']} ({r['origin_name']})" if r["origin_name"] else r["origin"],
        ]
        for r in rows
    ]
    return _out(rows, False, _table(["PRESENTITY", "STATE", "SUBTYPE", "MESSAGE", "ORIGIN"], table))


def hints(client: Client, as_json: bool) -> int:
    hints = client.request("GET", "/hints")
    # KEPT: "pbxmesh" for a hint pbxmesh keeps ([asterisk.hints]), empty for Asterisk's own
    rows = [
        [
            f"{h['exten']}@{h['context']}",
            h["hint"] or "",
            h["status_text"] or "",
            "pbxmesh" if h.get("kept") else "",
        ]
        for h in hints
    ]
    return _out(hints, as_json, _table(["HINT", "DEVICES", "STATE", "KEPT"], rows))


def status(client: Client, as_json: bool) -> int:
    s = client.request("GET", "/status")
    ast = s.get("asterisk")
    ast_text = "not configured"
    if ast:
        # connected, DEGRADED (Asterisk answers and refuses what we send) or DISCONNECTED
        state = ast.get("state") or ("connected" if ast["connected"] else "disconnected")
        ast_text = f"{state if state == 'connected' else state.upper()} to {ast['address']}"
        if ast.get("reason"):  # what to fix, on a line of its own
            ast_text += f"\nreason     {ast['reason']}"
    human = "\n".join(
        [
            f"node       {s['name']}  eid {s['eid']}",
            f"transport  {s['transport']}  link {'up' if s['link_up'] else 'DOWN'}  "
            f"quorate {'yes' if s['quorate'] else 'NO'}  view {s['view']}  members {s['members']}",
            f"state      {s['devices']} devices, {s['mailboxes']} mailboxes, "
            f"{s.get('presentities', 0)} presentities, "
            f"{s['queue_depth']} changes queued, {s['resyncs']} resyncs",
            f"asterisk   {ast_text}",
            f"rejected   {', '.join(f'{k}={v}' for k, v in s['rejected'].items()) or 'none'}",
        ]
    )
    _out(s, as_json, human)
    return 0 if s["link_up"] and (not ast or ast["connected"]) else EXIT_FAILED


def publish(client: Client, args: argparse.Namespace) -> int:
    if args.kind == "device_state":
        state = parse_state(args.state)
        r = client.request(
            "POST", "/publish/device_state", {"device": args.device, "state": state.name}
        )
        return _out(r, args.json, f"{r['device']} is now {r['state']} on this node")
    if args.kind == "presence_state":
        # Checked here too, so a mistake is said before the node is asked (exit 2).
        presence = parse_presence(args.state)
        presentity = check_presentity(args.presentity)
        check_presence_text("subtype", args.subtype)
        check_presence_text("message", args.message)
        r = client.request(
            "POST",
            "/publish/presence_state",
            {
                "presentity": presentity,
                "state": presence.text,
                "subtype": args.subtype,
                "message": args.message,
            },
        )
        shown = ", ".join(t for t in (r["subtype"], r["message"]) if t)
        return _out(
            r, args.json, f"{r['presentity']} is now {r['state']}{f' ({shown})' if shown else ''}"
        )
    if args.new < 0 or args.old < 0:
        raise CliError("message counts cannot be negative", EXIT_USAGE)
    r = client.request(
        "POST", "/publish/mwi", {"mailbox": args.mailbox, "new": args.new, "old": args.old}
    )
    return _out(r, args.json, f"{r['mailbox']}: {r['new']} new, {r['old']} old")
