"""The exception tree of pbxmesh.

Every exception the package raises on purpose derives from :class:`PbxmeshError`::

    PbxmeshError
    ├── ProtocolError              bytes that do not form a valid message
    │   ├── LocalProtocolError     we were asked to *send* something invalid
    │   └── RemoteProtocolError    a peer sent us something invalid
    ├── StateError                 a device state, name or mailbox that is not valid
    ├── ConfigError                a configuration file or value that is not valid
    ├── SecurityError              a frame that fails authentication or authorisation
    ├── TransportError             the cluster engine (Corosync, NATS) failed
    │   └── TransportClosed        the transport was closed or its engine went away
    └── LinkError                  a link to Asterisk failed (not connected, timed out)
        ├── RingPlacementError     the ring link would share a corosync node with an Asterisk
        ├── LinkRefused            Asterisk answered a request with an error
        └── AmiError               the Asterisk Manager Interface refused or failed
            └── AmiActionError     an action answered ``Response: Error`` (also LinkRefused)

Codecs raise :class:`RemoteProtocolError` for anything they decode, so the single inbound
boundary of each transport can log, count and drop a bad message without ending its loop.
Messages say what was wrong and, where it helps, what would be valid.
"""

from __future__ import annotations

__all__ = [
    "AmiActionError",
    "AmiError",
    "ConfigError",
    "LinkError",
    "LinkRefused",
    "LocalProtocolError",
    "PbxmeshError",
    "ProtocolError",
    "RemoteProtocolError",
    "RingPlacementError",
    "SecurityError",
    "StateError",
    "TransportClosed",
    "TransportError",
]


class PbxmeshError(Exception):
    """Root of every error raised by pbxmesh."""


class ProtocolError(PbxmeshError):
    """Bytes that do not form a valid message of a wire protocol."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode or send something the protocol cannot carry."""


class RemoteProtocolError(ProtocolError):
    """A peer sent bytes that do not decode; the message is dropped, the link survives."""


class StateError(PbxmeshError, ValueError):
    """A device state, device name, mailbox or entity id that is not valid."""


class ConfigError(PbxmeshError):
    """A configuration that is not valid; the message names file, line and key."""


class SecurityError(PbxmeshError):
    """A frame rejected by origin authentication, authorisation or replay protection.

    ``reason`` is a short stable token (``unsigned``, ``bad-signature``, ``unknown-origin``,
    ``wrong-origin``, ``unauthorised``, ``replay``) used for metrics and log de-duplication.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TransportError(PbxmeshError):
    """The cluster engine failed (library error, daemon gone, server unreachable)."""


class TransportClosed(TransportError):
    """The transport is closed, or its engine went away and it is reconnecting."""


class LinkError(PbxmeshError):
    """A link to Asterisk failed: not connected, closed, or no answer in time."""


class RingPlacementError(LinkError):
    """The res_corosync ring link refuses to join: an Asterisk on the same corosync node is
    already in the group, and Asterisk tells members apart by node id alone."""


class LinkRefused(LinkError):
    """Asterisk answered a link's request with an error."""


class AmiError(LinkError):
    """The Asterisk Manager Interface refused a login or failed."""


class AmiActionError(AmiError, LinkRefused):
    """An AMI action answered ``Response: Error``; ``message`` is Asterisk's text."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"AMI action {action} failed: {message}")
        self.action = action
        self.message = message
