"""``pbxmesh run``: one node with its transport, Asterisk link and control listener.

Theory of operation
-------------------
:class:`Daemon` builds everything from a validated :class:`~pbxmesh.config.Config`: the EID
and the version clock from the state directory, the transport (Corosync or NATS), the node,
the security guard, the links to Asterisk (``[asterisk]``: AMI), the control API with metrics
and the lamp page.
It runs until SIGTERM/SIGINT, then leaves the cluster cleanly (peers drop our slots at once:
the transport's leave and a LEAVE frame). SIGHUP re-reads the file and applies each section
in place or refuses it with one log line, and the node keeps running either way: channels
are replaced (state kept, re-announced); the links to Asterisk and the ring bridge are
restarted only if their settings changed (old ones closed first, so that a SIP listener can
be bound again; a new one that cannot start brings the old one back); ``[control]`` rebinds
(or only takes the new token); ``[security]`` peers apply at once; ``[node]``, ``[cluster]``
and a new signing key need a restart, named key by key. A file that no longer validates is
reported and the running configuration is kept.
Logs go to stderr (journald under systemd), one line per lifecycle or membership change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
from typing import Any

from .clock import HybridClock, VersionFile
from .config import AsteriskConfig, ClusterConfig, Config, RingSection, load_config
from .daemon_reload import changed_keys, reload_control, reload_security
from .eid import load_or_create_eid
from .errors import ConfigError, PbxmeshError
from .linkconfig import asterisk_links, ring_link
from .links.base import Link
from .node import Node, NodeConfig
from .own_state import OwnStateFile
from .tasks import cancel_and_wait
from .transport.base import Transport

__all__ = ["Daemon", "OwnStateFile", "make_transport"]

log = logging.getLogger(__name__)

#: seconds between saves of this node's own assertions (and one more at stop)
OWN_STATE_INTERVAL = 1.0
#: Seconds a starting node waits for the members' snapshots before its links read Asterisk.
CATCH_UP_TIMEOUT = 5.0


def make_transport(cluster: ClusterConfig, node_name: str) -> Transport:
    """The transport named by ``[cluster] transport``; backends are imported lazily."""
    if cluster.transport == "corosync":
        from .transport.corosync import CorosyncConfig, CorosyncTransport

        return CorosyncTransport(
            CorosyncConfig(
                group=cluster.group, reconnect_interval=cluster.corosync.reconnect_interval
            )
        )
    if cluster.transport == "nats":
        from .transport.nats import NatsTransport

        return NatsTransport.from_config(cluster, node_name)
    raise ConfigError(f"unknown transport {cluster.transport!r}")


class Daemon:
    """Runs one node until told to stop."""

    def __init__(self, config: Config, transport: Transport | None = None) -> None:
        self.config = config
        state_dir = config.node.state_dir
        override = str(config.node.eid) if config.node.eid else None
        if override is None and config.security.key is not None:
            # A signing node's EID is derived from its key, so nobody can claim it.
            from .security import eid_for_key, load_private_key

            override = str(eid_for_key(load_private_key(config.security.key).public_key()))
        try:
            self.eid = load_or_create_eid(state_dir, override)
        except PermissionError:
            raise ConfigError(
                f"{state_dir}: permission denied; create it or run as its owner"
            ) from None
        versions = VersionFile(state_dir / "version")
        self.clock = HybridClock(
            lambda: time.time_ns() // 1_000_000, start_after=versions.load(), persist=versions.save
        )
        guard = None
        if config.security.key is not None or config.security.peers:
            from .security import build_guard

            guard = build_guard(config.security, self.eid, config.node.name, state_dir)
        self.guard = guard
        self.transport = transport or make_transport(config.cluster, config.node.name)
        self.node = Node(
            NodeConfig(
                name=config.node.name,
                eid=self.eid,
                channels=config.channels,
                frame_interval=config.cluster.frame_interval,
            ),
            self.transport,
            clock=self.clock,
            guard=guard,
        )
        #: the links to Asterisk (the [asterisk] section's AMI link, if any)
        self.links: list[Link] = []
        #: the [asterisk.ring] bridge, if any (also in ``links``)
        self.ring_link: Link | None = None
        self.control: Any = None
        self.own_file = OwnStateFile(state_dir / "own-state.json")
        self._saver: asyncio.Task[None] | None = None
        self._saved: tuple[int, int, int] = (0, 0, 0)
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()

    # -- links to Asterisk ------------------------------------------------------------------
    async def _open_links(self, ast: AsteriskConfig | None) -> None:
        for link in asterisk_links(ast, self.config.node.state_dir):
            await self.node.add_link(link)
            self.links.append(link)

    async def _open_ring(self, ring: RingSection | None) -> None:
        """``[asterisk.ring]``: join the res_corosync ring as a bridge (links/ring/). It is
        kept across reloads unless its section changed: every leave and join of the group
        makes each Asterisk re-send its whole cache."""
        if ring is None:
            return
        link = ring_link(ring)
        await self.node.add_link(link)
        self.ring_link = link
        self.links.append(link)

    async def _close_ring(self) -> None:
        link, self.ring_link = self.ring_link, None
        if link is not None:
            if link in self.links:
                self.links.remove(link)
            await self.node.remove_link(link)

    async def _close_links(self) -> None:
        while self.links:
            await self.node.remove_link(self.links.pop())

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        from .control import ControlServer
        from .metrics import Metrics
        from .web import lamp_page

        log.info(
            "starting pbxmesh node=%s eid=%s transport=%s group=%s",
            self.config.node.name,
            self.eid,
            self.config.cluster.transport,
            self.config.cluster.group,
        )
        devices, mwi = self.own_file.load()
        presence = self.own_file.load_presence()
        cluster_mwi, cluster_presence = self.own_file.load_cluster()
        if cluster_mwi or cluster_presence:
            self.node.own.restore_cluster(cluster_mwi, cluster_presence)
            log.info(
                "restored the cluster's mailboxes=%d presentities=%d as last seen",
                len(cluster_mwi),
                len(cluster_presence),
            )
        if devices or mwi or presence:
            self.node.own.restore(devices, mwi, presence)
            log.info(
                "restored own state devices=%d mailboxes=%d presentities=%d",
                len(devices),
                len(mwi),
                len(presence),
            )
        self._saved = self._generation()
        await self.node.start()
        self._saver = asyncio.create_task(self._save_loop(), name="pbxmesh-own-state")
        # The links read Asterisk at start: first let the cluster's snapshots in, so that a copy
        # of another server's state left in Asterisk is known for one (bounded: a frozen peer
        # must not keep this server's own states out of the cluster).
        if not await self.node.wait_caught_up(CATCH_UP_TIMEOUT):
            log.warning(
                "not every member's snapshot arrived within %.0f s; reading Asterisk anyway",
                CATCH_UP_TIMEOUT,
            )
        await self._open_links(self.config.asterisk)
        await self._open_ring(self.config.ring)
        metrics = Metrics(self.node, links=lambda: self.links)
        host, port = self.config.control.listen
        self.control = ControlServer(
            self.node,
            host,
            port,
            token=self.config.control.token,
            links=lambda: self.links,
            metrics=metrics.render,
            page=lamp_page,
        )
        metrics.control = self.control
        await self.control.start()

    async def _save_loop(self) -> None:
        # A kept assertion (CLI, script) is saved at once; other changes of our own slots at
        # least every OWN_STATE_INTERVAL.
        kept = self.node.kept_changed
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OWN_STATE_INTERVAL):
                    await kept.wait()
            kept.clear()
            await self._save_own_off_loop()

    def _generation(self) -> tuple[int, int, int]:
        """Changes since the start: this node's own, and of every mailbox and presentity."""
        stats = self.node.stats
        return self.node.own_changes, stats.mwi_changes, stats.presence_changes

    async def _save_own_off_loop(self) -> None:
        # The snapshot on the loop, the write (fsync) in a thread: a slow disk must not stall
        # the loop, least of all for a SIP link, whose Asterisk waits for each answer.
        generation = self._generation()
        if generation == self._saved:
            return
        self._saved = generation
        node = self.node
        try:
            await asyncio.to_thread(
                self.own_file.save,
                *node.own.own_state(),
                node.own.own_presence(),
                node.own.cluster_records(),
            )
        except OSError as exc:
            log.error("cannot save own state to %s: %s", self.own_file.path, exc)

    def _save_own(self) -> None:
        generation = self._generation()
        if generation == self._saved:
            return
        self._saved = generation
        node = self.node
        try:
            self.own_file.save(
                *node.own.own_state(), node.own.own_presence(), node.own.cluster_records()
            )
        except OSError as exc:
            log.error("cannot save own state to %s: %s", self.own_file.path, exc)

    async def stop(self) -> None:
        await cancel_and_wait(self._saver)
        self._saver = None
        # Each step on its own: a failing one must not keep the node from saving and leaving.
        for step in (self._close_control, self._close_links):
            try:
                await step()
            except PbxmeshError as exc:
                log.error("while stopping: %s", exc)
        self._save_own()
        await self.node.close()

    async def _close_control(self) -> None:
        if self.control is not None:
            await self.control.close()

    async def reload(self) -> None:
        """Re-read the configuration file (SIGHUP). Each section is applied in place or
        refused with one log line; either way the node keeps running, and only what was
        applied becomes the running configuration."""
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            return
        old = self.config
        security_applied = reload_security(
            self.guard, self.node, old.node.name, old.security, new.security
        )
        control_applied = await reload_control(self.control, old.control, new.control)
        refused = [
            key
            for name in ("node", "cluster", "control", "security")
            if not (name == "security" and security_applied)
            and not (name == "control" and control_applied)
            for key in changed_keys(name, getattr(self.config, name), getattr(new, name))
        ]
        if refused:
            log.warning(
                "reload: changes to %s need a restart (systemctl restart pbxmesh); the "
                "running values are kept",
                ", ".join(refused),
            )
        if new.channels != self.config.channels:
            self.node.reconfigure(new.channels)
        asterisk = self.config.asterisk
        if new.asterisk != asterisk and await self._reload_asterisk(new.asterisk):
            asterisk = new.asterisk
        ring = self.config.ring
        if new.ring != ring and await self._reload_ring(new.ring):
            ring = new.ring
        # Only what was applied becomes the running configuration.
        self.config = dataclasses.replace(
            self.config,
            channels=new.channels,
            asterisk=asterisk,
            ring=ring,
            security=new.security if security_applied else self.config.security,
            control=new.control if control_applied else self.config.control,
        )
        log.info("reload done channels=%s", ",".join(c.name for c in new.channels))

    async def _reload_asterisk(self, new: AsteriskConfig | None) -> bool:
        """Replace the links to Asterisk (the ring aside); True if the new ones run. The old
        links are closed first, so that a new one may bind the same SIP listener; if a new
        one cannot start, the old configuration's links are started again."""
        await self._close_asterisk_links()
        try:
            await self._open_links(new)
        except PbxmeshError as exc:
            await self._close_asterisk_links()
            log.error(
                "reload: the new [asterisk] settings are refused, %s: %s",
                "the running link is kept" if self.config.asterisk else "no link to Asterisk runs",
                exc,
            )
            try:
                await self._open_links(self.config.asterisk)
            except PbxmeshError as again:
                log.error("reload: the running Asterisk link did not restart either: %s", again)
            return False
        log.info("reload: Asterisk link %s", "restarted" if new else "removed")
        return True

    async def _close_asterisk_links(self) -> None:
        for link in [x for x in self.links if x is not self.ring_link]:
            self.links.remove(link)
            await self.node.remove_link(link)

    async def _reload_ring(self, new: RingSection | None) -> bool:
        """As :meth:`_reload_asterisk`, for ``[asterisk.ring]``."""
        await self._close_ring()
        try:
            await self._open_ring(new)
        except PbxmeshError as exc:
            await self._close_ring()
            log.error(
                "reload: the new [asterisk.ring] settings are refused, %s: %s",
                "the running bridge is kept" if self.config.ring else "no ring bridge runs",
                exc,
            )
            try:
                await self._open_ring(self.config.ring)
            except PbxmeshError as again:
                log.error("reload: the running ring bridge did not restart either: %s", again)
            return False
        log.info("reload: ring link %s", "restarted" if new else "removed")
        return True

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT (reloading on SIGHUP), then stop cleanly."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        try:
            # SIGTERM ends a start that is still connecting (a server that does not answer).
            starting = asyncio.create_task(self.start())
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait({starting, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if not starting.done():
                await cancel_and_wait(starting)
                log.info("stopped while starting")
                return 0
            starting.result()
            failed = getattr(self.transport, "failed", None)  # a transport that gave up
            while not self._stop.is_set():
                reload_wait = asyncio.create_task(self._reload.wait())
                stop_wait = asyncio.create_task(self._stop.wait())
                waits = {reload_wait, stop_wait}
                if isinstance(failed, asyncio.Event):
                    waits.add(asyncio.create_task(failed.wait()))
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                for t in waits:
                    t.cancel()
                if isinstance(failed, asyncio.Event) and failed.is_set():
                    why = getattr(self.transport, "fatal_error", "")
                    log.error("the transport gave up: %s", why)
                    return 1
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    try:
                        await self.reload()
                    except PbxmeshError as exc:  # never a reason to stop a running node
                        log.error("reload failed, still running: %s", exc)
            log.info("stopping: leaving the cluster")
            return 0
        except PbxmeshError as exc:
            log.error("%s", exc)
            return 1
        finally:
            with contextlib.suppress(PbxmeshError):
                await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
