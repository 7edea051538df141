"""THE place where nats-py's exceptions become pbxmesh errors."""

from __future__ import annotations

import ssl

from ...errors import TransportClosed, TransportError

__all__ = ["Busy", "translate"]


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
