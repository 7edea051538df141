"""What the SIP link tells an administrator when Asterisk does not answer or refuses a PUBLISH.

Theory of operation
-------------------
Each failure the link sees is turned here into one sentence that says what is wrong, where,
and what to change: the pjsip.conf object, the module, or the key of ``[asterisk.sip]``. The
translation of Asterisk's answers was checked against the real build (res_pjsip_pubsub and
res_pjsip_publish_asterisk), one broken configuration at a time:

====================================  =====================================================
Asterisk's configuration              its answer to our PUBLISH
====================================  =====================================================
res_pjsip_publish_asterisk.so absent  489 Bad Event ("No registered publish handler")
no inbound-publication named by the   404 Not Found
uri's user; or it has no
``event_<package>``; or the
asterisk-publication it names does
not exist
our address identified as another     403 Forbidden
endpoint than the inbound-
publication's ``endpoint``
our address not identified (no        401 Unauthorized (Asterisk's artificial endpoint
identify, or                          challenges; any credentials fail)
res_pjsip_endpoint_identifier_ip.so
absent)
the endpoint's ``auth`` and our       401 Unauthorized again after our answer
username/secret differ
====================================  =====================================================

:class:`Throttle` decides when a condition that repeats is logged again: at once the first
time, then with a doubling interval, with the count of what was held back, so one cause is
one line and a reminder now and then, never a line per change or per probe. Sans-IO: the
time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from .client import PublishFailure

__all__ = ["Throttle", "no_answer", "refused", "repeats"]


def no_answer(dest: tuple[str, int], transport: str, *, refused: bool = False) -> str:
    """Asterisk does not answer our OPTIONS probe (``refused``: a TCP connect was refused)."""
    host, port = dest
    if refused:
        return (
            f"cannot connect to {host}:{port} over TCP - is Asterisk running with a PJSIP "
            "transport of protocol = tcp bound there? check [asterisk.sip] uri and transport"
        )
    return (
        f"no answer to OPTIONS from {host}:{port} ({transport}) - is Asterisk running with a "
        "PJSIP transport bound there? check [asterisk.sip] uri"
    )


def refused(
    failure: PublishFailure,
    *,
    dest: tuple[str, int],
    resource: str,
    listen_host: str,
    credentials: bool,
) -> str:
    """Asterisk answered a PUBLISH with a refusal: what to fix, for each answer it gives."""
    host, port = dest
    head = (
        f"Asterisk at {host}:{port} refuses our PUBLISH on {failure.package} with "
        f"{failure.status} {failure.reason}"
    )
    match failure.status:
        case 489:
            fix = (
                "res_pjsip_publish_asterisk.so is not loaded there: add "
                "'load => res_pjsip_publish_asterisk.so' to modules.conf and run "
                "'module load res_pjsip_publish_asterisk.so'"
            )
        case 404:
            fix = (
                f"pjsip.conf has no inbound-publication [{resource}] (the user of "
                f"[asterisk.sip] uri) with event_{failure.package} naming an existing "
                "asterisk-publication; 'pbxmesh asterisk-config' prints them"
            )
        case 403:
            fix = (
                f"Asterisk identifies {listen_host} as another endpoint than the one "
                f"inbound-publication [{resource}] names: check its endpoint = and the "
                "identify object's match ="
            )
        case 401 | 407 if credentials:
            fix = (
                "our credentials were refused: [asterisk.sip] username/secret must match the "
                "auth object of the endpoint; or no identify object matches "
                f"{listen_host} (res_pjsip_endpoint_identifier_ip.so loaded, match = "
                f"{listen_host})"
            )
        case 401 | 407:
            fix = (
                f"no endpoint is identified for {listen_host}: add an identify object with "
                f"match = {listen_host} for the endpoint of inbound-publication [{resource}] "
                "(res_pjsip_endpoint_identifier_ip.so loaded); or that endpoint has auth = "
                "and [asterisk.sip] needs the same username/secret"
            )
        case _:
            fix = "Asterisk's log says why"
    return f"{head}: {fix}"


def repeats(count: int, seconds: float) -> str:
    """The tail of a reminder line: how often the condition was seen since the last one."""
    return f" (seen {count} times in the last {seconds:.0f} s)" if count > 1 else ""


@dataclass(slots=True)
class Throttle:
    """When to log a condition again: the first time at once, then at most once per interval,
    the interval doubling from ``first`` to ``cap`` seconds."""

    first: float = 10.0
    cap: float = 300.0
    _next: float | None = None  # when the next line may go out; None: at once
    _interval: float = 0.0
    _count: int = 0  # occurrences since the last line
    _since: float = 0.0  # when the last line went out

    def hit(self, now: float) -> tuple[int, float] | None:
        """One more occurrence: ``(occurrences, seconds)`` since the last line if this one is
        to be logged, else None."""
        self._count += 1
        if self._next is not None and now < self._next:
            return None
        self._interval = self.first if self._next is None else min(self._interval * 2, self.cap)
        seen, elapsed = self._count, now - self._since
        self._next, self._since, self._count = now + self._interval, now, 0
        return seen, elapsed

    def reset(self) -> None:
        """The condition ended: its next occurrence is logged at once."""
        self._next, self._interval, self._count = None, 0.0, 0
