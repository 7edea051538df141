"""Non-INVITE transactions (RFC 3261 §17.1.2, §17.2.2), sans-IO with time passed in.

Theory of operation
-------------------
*Client side.* A :class:`ClientTransaction` owns one request until a final response or a
timeout. Over UDP it asks for the request to be sent again at Timer E, which starts at T1 and
doubles up to T2 while no response came (TRYING) and stays at T2 after a provisional one
(PROCEEDING). Timer F (64·T1) ends it with a timeout, which the caller reports as a ``408``.
Over TCP the transport is reliable: no Timer E, Timer F still bounds the wait. After a final
response the transaction lingers for Timer K (T4 over UDP, 0 over TCP) only to absorb
retransmitted finals. The caller asks :meth:`~ClientTransaction.next_deadline`, calls
:meth:`~ClientTransaction.on_timer` when it passes, and feeds responses whose top Via branch
and CSeq method match.

*Server side.* A retransmitted request (same top-Via branch, sent-by and method) must get the
same answer and must not reach the handler twice. :class:`ServerTransactions` remembers each
request's answer for Timer J (64·T1 over UDP); a retransmission gets the stored response, or
nothing while the handler has not answered. The table is bounded (oldest entries go first).

:func:`make_response` builds a response the way RFC 3261 §8.2.6 asks: Vias, From, To (with a
tag added), Call-ID and CSeq copied, the top Via given ``received`` and a filled ``rport``
(RFC 3581) when the request came from a known address.
"""

from __future__ import annotations

import enum
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

from .headers import BRANCH_MAGIC, Via, header_param
from .message import Request, Response

__all__ = [
    "ClientTransaction",
    "ServerTransactions",
    "Timers",
    "TxEvent",
    "make_response",
    "new_branch",
    "new_tag",
]


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 timer values in seconds; :meth:`fast` is for tests."""

    t1: float = 0.5  # round-trip estimate; Timer E starts here
    t2: float = 4.0  # cap of the retransmission interval
    t4: float = 5.0  # how long the network may hold a message (Timer K over UDP)

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2 or self.t4 < 0:
            raise ValueError(f"bad SIP timers {self}")

    @property
    def timer_f(self) -> float:
        return 64 * self.t1

    @classmethod
    def fast(cls) -> Timers:
        return cls(t1=0.02, t2=0.16, t4=0.2)


def new_branch() -> str:
    """A fresh RFC 3261 branch."""
    return BRANCH_MAGIC + secrets.token_hex(12)


def new_tag() -> str:
    return secrets.token_hex(8)


class TxState(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class TxEvent(enum.Enum):
    """What :meth:`ClientTransaction.on_timer` asks of its caller."""

    RETRANSMIT = "retransmit"  # send the request again
    TIMEOUT = "timeout"  # Timer F: report a 408 to the user, the transaction is over
    TERMINATED = "terminated"  # Timer K: forget the transaction


class ClientTransaction:
    """One non-INVITE client transaction."""

    def __init__(self, request: Request, *, reliable: bool, now: float, timers: Timers) -> None:
        self.request = request
        self.branch = request.top_via.branch or ""
        self.method = request.method
        self.reliable = reliable
        self.timers = timers
        self.state = TxState.TRYING
        self.sent = 1  # times the request was sent
        self._interval = timers.t1
        self._timer_e: float | None = None if reliable else now + timers.t1
        self._timer_f: float | None = now + timers.timer_f
        self._timer_k: float | None = None

    def next_deadline(self) -> float | None:
        times = [t for t in (self._timer_e, self._timer_f, self._timer_k) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> TxEvent | None:
        """Advance the timers to ``now``; at most one event per call."""
        if self._timer_k is not None and now >= self._timer_k:
            self._stop()
            return TxEvent.TERMINATED
        if self._timer_f is not None and now >= self._timer_f:
            self._stop()
            return TxEvent.TIMEOUT
        if self._timer_e is not None and now >= self._timer_e:
            if self.state is TxState.TRYING:
                self._interval = min(2 * self._interval, self.timers.t2)
            else:
                self._interval = self.timers.t2
            self._timer_e = now + self._interval
            self.sent += 1
            return TxEvent.RETRANSMIT
        return None

    def on_response(self, response: Response, now: float) -> Response | None:
        """A matching response; returns it if the user must see it, None if absorbed."""
        if self.state in (TxState.COMPLETED, TxState.TERMINATED):
            return None
        if response.status < 200:
            self.state = TxState.PROCEEDING
            return response
        self.state = TxState.COMPLETED
        self._timer_e = self._timer_f = None
        self._timer_k = now + (0.0 if self.reliable else self.timers.t4)
        return response

    def _stop(self) -> None:
        self.state = TxState.TERMINATED
        self._timer_e = self._timer_f = self._timer_k = None

    @property
    def done(self) -> bool:
        return self.state is TxState.TERMINATED


_PENDING: Final = object()


class ServerTransactions:
    """Absorbs retransmitted requests: same branch, same answer (RFC 3261 §17.2.3)."""

    def __init__(self, timers: Timers, max_entries: int = 10_000) -> None:
        self._lifetime = timers.timer_f  # Timer J
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, ...], tuple[float, object]] = OrderedDict()

    @staticmethod
    def key(request: Request) -> tuple[str, ...]:
        via = request.top_via
        branch = via.branch
        if branch is None or not branch.startswith(BRANCH_MAGIC):
            # RFC 2543 peer: fall back to the dialog and sequence identifiers.
            branch = "|".join(
                (
                    request.get("Call-ID") or "",
                    request.get("CSeq") or "",
                    header_param(request.get("From") or "", "tag") or "",
                )
            )
        method = "ACK-INVITE" if request.method in ("ACK", "INVITE") else request.method
        return (branch, via.host.lower(), str(via.port), method)

    def receive(self, request: Request, now: float) -> tuple[bool, Response | None]:
        """``(True, None)`` for a new request (the caller must answer it with :meth:`answer`);
        ``(False, response)`` for a retransmission (send ``response`` again if not None)."""
        self._purge(now)
        key = self.key(request)
        entry = self._entries.get(key)
        if entry is not None:
            answer = entry[1]
            return False, answer if isinstance(answer, Response) else None
        self._entries[key] = (now + self._lifetime, _PENDING)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
        return True, None

    def answer(self, request: Request, response: Response) -> None:
        """Remember the final answer to ``request`` for its retransmissions."""
        key = self.key(request)
        entry = self._entries.get(key)
        if entry is not None and response.status >= 200:
            self._entries[key] = (entry[0], response)

    def _purge(self, now: float) -> None:
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                break
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


def make_response(
    request: Request,
    status: int,
    reason: str,
    headers: tuple[tuple[str, str], ...] = (),
    *,
    to_tag: str | None = None,
    source: tuple[str, int] | None = None,
    body: bytes = b"",
) -> Response:
    """A response to ``request`` with the copied headers RFC 3261 §8.2.6 requires."""
    out: list[tuple[str, str]] = []
    vias = request.get_all("Via")
    for i, raw in enumerate(vias):
        value = raw
        if i == 0 and source is not None:
            via = Via.parse(raw)
            params: dict[str, str | None] = {"received": source[0]}
            if via.param("rport") is not None:
                params["rport"] = str(source[1])
            value = str(via.replace_params(**params))
        out.append(("Via", value))
    for name in ("From", "Call-ID", "CSeq"):
        copied = request.get(name)
        if copied is not None:
            out.append((name, copied))
    to = request.get("To") or ""
    if status > 100 and header_param(to, "tag") is None:
        to = f"{to};tag={to_tag or new_tag()}"
    out.append(("To", to))
    return Response(status, reason, (*out, *headers), body)
