"""THE place where nats-py's exceptions become pbxmesh errors."""

from __future__ import annotations

import ssl

from ...errors import TransportClosed, TransportError

__all__ = ["Busy", "describe", "translate"]


class Busy(TransportError):
    """nats-py cannot take the message now (reconnecting, buffer full): wait and retry."""


def translate(exc: BaseException, servers: tuple[str, ...]) -> TransportError:
    """THE place where nats-py exceptions become pbxmesh errors."""
    import nats.errors as ne

    where = ", ".join(servers)
    match exc:
        case ne.OutboundBufferLimitError() | ne.ConnectionReconnectingError():
            return Busy(f"nats: reconnecting, outbound buffer full ({type(exc).__name__})")
        case ne.ConnectionClosedError() | ne.ConnectionDrainingError():
            return TransportClosed("nats connection is closed")
        case ne.AuthorizationError():
            return TransportError(
                f"nats: {where} refused our credentials; check [cluster.nats] user/password, "
                "nkey_seed or creds against the server's accounts"
            )
        case ne.SecureConnRequiredError() | ne.SecureConnFailedError() | ssl.SSLError():
            return TransportError(
                f"nats: TLS with {where} failed ({exc}); set tls_ca to the CA of the servers' "
                "certificates (and tls_cert/tls_key if the servers require client certificates)"
            )
        case ne.NoServersError() | ne.TimeoutError() | TimeoutError() | OSError():
            return TransportError(
                f"nats: no server reachable among {where} ({type(exc).__name__}: {exc}); "
                "is nats-server running there?"
            )
        case ne.Error():
            return TransportError(f"nats: {type(exc).__name__}: {exc}")
    return TransportError(f"nats: unexpected {type(exc).__name__}: {exc}")


def describe(exc: BaseException, server: str, who: str) -> tuple[str, str]:
    """One line for a person about why connecting to ``server`` failed, and its kind:
    ``refused`` (credentials), ``tls`` (certificate or TLS setup), ``unreachable``, ``error``.

    ``who`` names our credentials (``user ACME-pbx1``, ``nkey seed /etc/...``).
    """
    import nats.errors as ne

    host = server.rpartition(":")[0].strip("[]")
    if isinstance(exc, ne.Error) and "authorization violation" in str(exc).lower():
        exc = ne.AuthorizationError()  # nats-py raises a plain Error for -ERR during CONNECT
    match exc:
        case ne.AuthorizationError():
            return "refused", (
                f"nats: {server} refused our credentials ({who}); check [cluster.nats] user and "
                "password (or nkey_seed, creds) against that server's accounts"
            )
        case ssl.SSLCertVerificationError():
            reason = exc.verify_message or str(exc)
            return "tls", (
                f"nats: TLS with {server} failed: {reason}; its certificate must be signed by "
                f"tls_ca and name {host!r} (as DNS or IP subjectAltName)"
            )
        case ne.SecureConnRequiredError():
            return "tls", f"nats: {server} requires TLS; use a tls:// URL and set tls_ca"
        case ssl.SSLError() | ne.SecureConnFailedError() | ne.SecureConnWantedError():
            return "tls", f"nats: TLS with {server} failed ({exc}); check tls_ca, tls_cert, tls_key"
        case ne.NoServersError():
            return "unreachable", f"nats: {server} unreachable (no server answered)"
        case TimeoutError() | ne.TimeoutError():
            return "unreachable", f"nats: {server} unreachable: no answer in connect_timeout"
        case OSError():
            return "unreachable", f"nats: {server} unreachable: {exc.strerror or exc}"
    return "error", f"nats: {server}: {type(exc).__name__}: {exc}"
