"""The control API's request and response helpers: JSON bodies, errors, the Host check."""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from .errors import StateError

__all__ = ["LOOPBACK_NAMES", "error_response", "host_name", "json_body"]


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StateError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise StateError("the request body must be a JSON object")
    return body


LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def host_name(host: str) -> str:
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def no_hints_reason(kinds: set[str]) -> str:
    """Why this node cannot list Asterisk's hints, and what to do, for the links it has."""
    if "sip" in kinds:
        return (
            "hints are read over AMI, and the SIP link cannot read them: add the AMI keys "
            "(ami, username, secret) to [asterisk] beside [asterisk.sip]; that AMI link then "
            "serves `pbxmesh hints` and shares presence only (docs/asterisk.md)"
        )
    if "ring" in kinds:
        return (
            "this node bridges a res_corosync ring and has no Asterisk of its own: list the "
            "hints on a ring Asterisk (asterisk -rx 'core show hints')"
        )
    return (
        "this node has no [asterisk] link, so it knows no hints: configure one (docs/asterisk.md)"
    )
