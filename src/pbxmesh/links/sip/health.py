"""What Asterisk's answers say about the SIP link: connected, degraded or disconnected, why,
and when to say it again.

Theory of operation
-------------------
The link's OPTIONS probe tells whether Asterisk answers at all (:meth:`Health.no_answer`);
every final answer to a PUBLISH tells whether it takes what pbxmesh publishes
(:meth:`Health.answered`). Asterisk refuses per event package (a missing module refuses
both, a missing ``event_asterisk-mwi`` line only MWI), so the link is *degraded* while any
package is refused, and connected again once every refused one has been accepted. While
degraded, :meth:`Health.retry_due` asks for a refresh now and then (5 s doubling to 60 s),
and at once when one package was accepted again, so a loaded module or a fixed pjsip.conf is
noticed without waiting for a change. Each cause is logged once, then as a reminder with a
count (:class:`~.diagnosis.Throttle`); the words come from :mod:`.diagnosis`.

It logs on the link's logger, so administrators' filters keep working.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Literal

from .client import PublishFailure
from .diagnosis import Throttle, repeats

__all__ = ["RETRY_FIRST", "RETRY_MAX", "Health"]

log = logging.getLogger("pbxmesh.links.sip.link")

#: Seconds between the refreshes that test whether a refusing Asterisk accepts again.
RETRY_FIRST: Final = 5.0
RETRY_MAX: Final = 60.0
#: What the endpoint answers itself when nobody answers: not a refusal by Asterisk.
LOCAL_FAILURES: Final = (408, 503)


class Health:
    """The link's state as Asterisk's answers show it (no I/O; the time is an argument)."""

    def __init__(self, where: str) -> None:
        self.where = where  # "host:port" of Asterisk, for the log lines
        #: why Asterisk does not answer (None: it does, or no probe has failed yet)
        self.down_reason: str | None = None
        self.was_up = False
        #: event package -> why Asterisk refuses our PUBLISHes on it (degraded while any)
        self.refusing: dict[str, str] = {}
        self.retry_at = 0.0  # the next refresh that tests a refusing Asterisk
        self.retry_interval = RETRY_FIRST
        self.probes_failed = 0  # OPTIONS probes Asterisk did not answer
        self.publishes_refused = 0  # PUBLISHes Asterisk answered with a refusal
        self._throttles: dict[tuple[str, int, str], Throttle] = {}

    def state(self, alive: bool) -> Literal["connected", "degraded", "disconnected"]:
        if not alive:
            return "disconnected"
        return "degraded" if self.refusing else "connected"

    def reason(self, alive: bool) -> str | None:
        """Why the link is not connected, in words an administrator acts on."""
        if not alive:
            return self.down_reason
        if self.refusing:
            return "; ".join(dict.fromkeys(self.refusing.values()))
        return None

    def up(self) -> None:
        self.was_up = True
        self.down_reason = None
        self._throttle("down").reset()

    def down(self) -> None:
        self.refusing.clear()  # what it refused is told again after the next link-up

    def no_answer(self, reason: str, now: float) -> None:
        """A probe failed: say why at once, then now and then (never once per probe)."""
        self.probes_failed += 1
        self.down_reason = reason
        seen = self._throttle("down").hit(now)
        if seen is not None:
            log.warning(
                "SIP link %s: %s%s", "down" if self.was_up else "not up", reason, repeats(*seen)
            )

    def answered(
        self,
        package: str,
        status: int,
        failure: PublishFailure | None,
        now: float,
        explain: Callable[[PublishFailure], str],
    ) -> bool:
        """One final answer to a PUBLISH on ``package``; True when the link is connected again
        after being degraded (what was refused meanwhile must be published again)."""
        if 200 <= status < 300:
            return self._accepted(package, now)
        if failure is None:
            return False  # answered by the client itself (a challenge, 412, 423)
        if status in LOCAL_FAILURES:
            # No answer from Asterisk (the probe tells the link's state): one line per while.
            seen = self._throttle("timeout", 0, package).hit(now)
            if seen is not None:
                log.warning("SIP link: no answer to PUBLISH: %s%s", failure, repeats(*seen))
            return False
        self.publishes_refused += 1
        reason = explain(failure)
        if not self.refusing:
            self.retry_at, self.retry_interval = now + RETRY_FIRST, RETRY_FIRST
        self.refusing[package] = reason
        seen = self._throttle("refused", status, package).hit(now)
        if seen is not None:
            log.warning("SIP link degraded: %s%s", reason, repeats(*seen))
        return False

    def _accepted(self, package: str, now: float) -> bool:
        if self.refusing.pop(package, None) is None:
            return False
        if self.refusing:
            # One package accepted again (the module was loaded, say): ask about the others at
            # the next tick rather than after the back-off.
            self.retry_at = now
            return False
        log.info(
            "SIP link connected again: Asterisk at %s accepts our PUBLISH; "
            "re-publishing every state",
            self.where,
        )
        for key, throttle in self._throttles.items():
            if key[0] == "refused":
                throttle.reset()
        return True

    def retry_due(self, now: float) -> bool:
        """While degraded, whether to send a refresh now to learn if Asterisk accepts again."""
        if not self.refusing or now < self.retry_at:
            return False
        self.retry_interval = min(self.retry_interval * 2, RETRY_MAX)
        self.retry_at = now + self.retry_interval
        return True

    def _throttle(self, kind: str, status: int = 0, package: str = "") -> Throttle:
        key = (kind, status, package)
        throttle = self._throttles.get(key)
        if throttle is None:
            throttle = self._throttles[key] = Throttle()
        return throttle
