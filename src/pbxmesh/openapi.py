"""The OpenAPI description of the control API (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any, Final

from . import __version__

_STATE: Final = {
    "type": "string",
    "enum": [
        "UNKNOWN",
        "NOT_INUSE",
        "INUSE",
        "BUSY",
        "INVALID",
        "UNAVAILABLE",
        "RINGING",
        "RINGINUSE",
        "ONHOLD",
    ],
}
_PRESENCE: Final = {
    "type": "string",
    "enum": ["not_set", "unavailable", "available", "away", "xa", "chat", "dnd"],
}
_ERROR: Final = {
    "description": "a request that cannot be served",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _get(
    summary: str, schema: dict[str, Any], params: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": schema}}},
            "401": _ERROR,
        },
    }
    if params:
        op["parameters"] = params
    return {"get": op}


def _list(ref: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{ref}"}}


_PATTERN: Final = [
    {
        "name": "pattern",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "glob pattern, e.g. PJSIP/1*",
    }
]

OPENAPI: Final[dict[str, Any]] = {
    "openapi": "3.0.3",
    "info": {"title": "pbxmesh control API", "version": __version__},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "Member": {
                "type": "object",
                "required": ["name", "nodeid", "address", "eid", "member", "self"],
                "properties": {
                    "name": {"type": "string"},
                    "nodeid": {"type": "string", "nullable": True, "example": "0xfb634e0a"},
                    "nodeid_decimal": {"type": "integer", "nullable": True},
                    "address": {"type": "string", "nullable": True},
                    "eid": {"type": "string", "nullable": True, "example": "02:00:5e:10:00:01"},
                    "eids": {"type": "array", "items": {"type": "string"}},
                    "member": {"type": "boolean"},
                    "self": {"type": "boolean"},
                    "member_id": {"type": "string"},
                    "joined_at": {"type": "number", "description": "Unix time"},
                    "kind": {
                        "type": "string",
                        "enum": ["pbxmesh", "asterisk"],
                        "description": "asterisk: a res_corosync server seen by a ring link",
                    },
                },
            },
            "Channel": {
                "type": "object",
                "required": ["name", "publish", "subscribe"],
                "properties": {
                    "name": {"type": "string"},
                    "publish": {"type": "array", "items": {"type": "string"}},
                    "subscribe": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Device": {
                "type": "object",
                "required": ["device", "state", "origins"],
                "properties": {
                    "device": {"type": "string"},
                    "state": _STATE,
                    "origins": {
                        "type": "object",
                        "additionalProperties": _STATE,
                        "description": "EID -> that origin's state",
                    },
                },
            },
            "Mailbox": {
                "type": "object",
                "required": ["mailbox", "new", "old", "origin"],
                "properties": {
                    "mailbox": {"type": "string", "example": "1000@default"},
                    "new": {"type": "integer"},
                    "old": {"type": "integer"},
                    "origin": {"type": "string"},
                    "origin_name": {"type": "string"},
                },
            },
            "Presence": {
                "type": "object",
                "required": ["presentity", "state", "subtype", "message", "origin"],
                "properties": {
                    "presentity": {"type": "string", "example": "CustomPresence:alice"},
                    "state": _PRESENCE,
                    "subtype": {"type": "string", "maxLength": 255},
                    "message": {"type": "string", "maxLength": 255, "example": "back at 3"},
                    "origin": {"type": "string", "description": "EID of the last writer"},
                    "origin_name": {"type": "string"},
                },
            },
            "Hint": {
                "type": "object",
                "properties": {
                    "exten": {"type": "string"},
                    "context": {"type": "string"},
                    "hint": {"type": "string"},
                    "status": {"type": "integer"},
                    "status_text": {"type": "string"},
                    "kept": {
                        "type": "boolean",
                        "description": "pbxmesh keeps this hint ([asterisk.hints])",
                    },
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/status": _get("health of the node, its transport and links", {"type": "object"}),
        "/api/v1/members": _get("cluster members (as ais clm show members)", _list("Member")),
        "/api/v1/channels": _get(
            "event channels (as ais evt show event channels)", _list("Channel")
        ),
        "/api/v1/devices": _get(
            "devices: cluster value and each origin's state", _list("Device"), _PATTERN
        ),
        "/api/v1/mwi": _get("mailboxes: counts and last writer", _list("Mailbox"), _PATTERN),
        "/api/v1/presence": _get(
            "presentities: state, subtype, message and last writer", _list("Presence"), _PATTERN
        ),
        "/api/v1/hints": _get("the hints of the linked Asterisk", _list("Hint")),
        "/api/v1/publish/device_state": {
            "post": {
                "summary": "assert a device state as this node's origin",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["device", "state"],
                                "properties": {"device": {"type": "string"}, "state": _STATE},
                            }
                        }
                    },
                },
                "responses": {"202": {"description": "accepted"}, "400": _ERROR, "401": _ERROR},
            }
        },
        "/api/v1/publish/mwi": {
            "post": {
                "summary": "assert message counts as this node's origin",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["mailbox", "new", "old"],
                                "properties": {
                                    "mailbox": {"type": "string"},
                                    "new": {"type": "integer", "minimum": 0},
                                    "old": {"type": "integer", "minimum": 0},
                                },
                            }
                        }
                    },
                },
                "responses": {"202": {"description": "accepted"}, "400": _ERROR, "401": _ERROR},
            }
        },
        "/api/v1/publish/presence_state": {
            "post": {
                "summary": "assert a presence as this node's origin (kept across restarts)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["presentity", "state"],
                                "properties": {
                                    "presentity": {
                                        "type": "string",
                                        "example": "CustomPresence:alice",
                                    },
                                    "state": _PRESENCE,
                                    "subtype": {"type": "string", "maxLength": 255},
                                    "message": {"type": "string", "maxLength": 255},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "accepted: the presentity as it now is",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Presence"}
                            }
                        },
                    },
                    "400": _ERROR,
                    "401": _ERROR,
                },
            }
        },
        "/api/v1/events": {
            "get": {
                "summary": "Server-Sent Events of every change",
                "responses": {"200": {"description": "text/event-stream"}},
            }
        },
    },
}
