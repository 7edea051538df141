"""Start real, private Asterisk instances for tests and benchmarks.

Asterisk is not part of pbxmesh and Debian 12 does not package it. ``scripts/setup.sh`` unpacks
every build tarball that lies beside the checkout (``../shared/asterisk/asterisk-*.tar.xz``, or
the files named by ``PBXMESH_ASTERISK_TARBALL``) into ``.asterisk/<build>/`` (``22.10.1``,
``master-f0c1c1a7b7``, ...) and installs their runtime libraries. Other unpacked trees can be
named with ``PBXMESH_ASTERISK_ROOT`` (one path, or several separated by ``:``; each must hold
``usr/sbin/asterisk``, its modules and its XML documentation, without which Asterisk stops at
start with ``Stasis initialization failed``); a path that does not exist hides every build.

:func:`asterisk_builds` lists the builds found. The tests marked ``asterisk`` run once per build
(``tests/harness/fixtures.py`` parametrizes them, the build's name in the test id) and
:func:`selected_build` makes one build the one :class:`Asterisk` starts; outside a test the
first build (or the one named by ``PBXMESH_ASTERISK_BUILD``) is used.

:class:`Asterisk` is one instance with a directory of its own (every Asterisk directory private
except the modules and the documentation), its own EID, and AMI (and optionally SIP) on free
loopback ports, or inside a network namespace. Configuration files are written from Python
strings; ``modules.conf`` loads only the modules asked for (start-up under a second).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pbxmesh.ports import free_ports

__all__ = [
    "AMI_MODULES",
    "AMI_SECRET",
    "AMI_USER",
    "Asterisk",
    "Build",
    "asterisk_builds",
    "asterisk_missing_reason",
    "asterisk_root",
    "free_port",
    "selected",
    "selected_build",
]

REPO = Path(__file__).resolve().parents[2]
AMI_USER = "admin"  # the same account as the simulator in tests/ami_helpers.py
AMI_SECRET = "s3cret"

#: What the AMI link needs: Custom: devices, hints, DeviceStateChange, MWIUpdate/MWIGet,
#: and presence (PRESENCE_STATE(), PresenceStateChange, PresenceStateList).
AMI_MODULES: tuple[str, ...] = (
    "pbx_config",
    "func_devstate",
    "res_manager_devicestate",
    "res_sorcery_config",
    "res_sorcery_memory",
    "res_sorcery_astdb",
    "res_mwi_external",
    "res_mwi_external_ami",
    "func_presencestate",
    "res_manager_presencestate",
)


@dataclass(frozen=True)
class Build:
    """One unpacked Asterisk build: its short name (the test-id part) and its tree."""

    name: str
    root: Path


_MISSING = (
    "no real Asterisk: scripts/setup.sh unpacks one into .asterisk/ when a build tarball is "
    "beside the checkout (../shared/asterisk/ or PBXMESH_ASTERISK_TARBALL); or set "
    "PBXMESH_ASTERISK_ROOT to an unpacked tree"
)


def asterisk_builds() -> list[Build]:
    """Every usable build, LTS releases first (sorted by name: ``22.10.1`` < ``master-…``)."""
    env = os.environ.get("PBXMESH_ASTERISK_ROOT")
    if env:
        roots = [Path(p) for p in env.split(os.pathsep) if p]
    else:
        roots = sorted(p for p in (REPO / ".asterisk").glob("*") if p.is_dir())
    builds = [Build(_build_name(r), r) for r in roots if (r / "usr/sbin/asterisk").exists()]
    return sorted(builds, key=lambda b: b.name)


def _build_name(root: Path) -> str:
    """``master-f0c1c1a7b7`` -> ``master``: the id stays put when master moves on."""
    name = root.name
    return "master" if name.startswith("master") else name


_selected: list[Build] = []


@contextlib.contextmanager
def selected_build(build: Build) -> Iterator[Build]:
    """Make ``build`` the one :class:`Asterisk` instances start, until the block ends."""
    _selected.append(build)
    try:
        yield build
    finally:
        _selected.remove(build)


def selected() -> Build | None:
    """The build a test selected (:func:`selected_build`), or None outside one (the simulator)."""
    return _selected[-1] if _selected else None


def current_build() -> Build | None:
    """The selected build; else the one PBXMESH_ASTERISK_BUILD names; else the first."""
    if _selected:
        return _selected[-1]
    builds = asterisk_builds()
    wanted = os.environ.get("PBXMESH_ASTERISK_BUILD")
    if wanted:
        return next((b for b in builds if b.name == wanted), None)
    return builds[0] if builds else None


def asterisk_root() -> Path | None:
    """The unpacked Asterisk tree to use, or None."""
    build = current_build()
    return build.root if build else None


def asterisk_missing_reason() -> str | None:
    """Why no real Asterisk can run here, or None when one can."""
    build = current_build()
    if build is None:
        wanted = os.environ.get("PBXMESH_ASTERISK_BUILD")
        if wanted and asterisk_builds():
            names = ", ".join(b.name for b in asterisk_builds())
            return f"PBXMESH_ASTERISK_BUILD={wanted} names no build here (there are: {names})"
        return _MISSING
    if not (build.root / "var/lib/asterisk/documentation").is_dir():
        return (
            f"{build.root} has no var/lib/asterisk/documentation: Asterisk cannot start without it"
        )
    return None


def free_port() -> int:
    """A port free for TCP and UDP on 127.0.0.1, below the ephemeral range, so no outgoing
    connection takes it before the test binds it."""
    return free_ports(1)[0]


def eid_of(n: int) -> str:
    return f"02:00:00:00:0a:{n:02x}"


@dataclass
class Asterisk:
    """One private Asterisk: write its files with :meth:`write`, then :meth:`start`."""

    name: str
    eid: str
    modules: Sequence[str] = AMI_MODULES
    dialplan: str = ""
    files: Mapping[str, str] = field(default_factory=dict)  # more config files: name -> text
    netns: str | None = None
    #: the whole manager.conf; None: a [general] on ami_port and an all-powerful test user
    manager_conf: str | None = None
    #: run Asterisk inside another process's mount and network namespaces (e.g. a corosync
    #: started with a private /run, so res_corosync finds that corosync's IPC)
    enter_pid: int | None = None
    ami_port: int = 0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pbxm-ast-")))
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        build = current_build()
        if build is None:
            raise RuntimeError(asterisk_missing_reason())
        self.build = build
        self.root = build.root
        if not self.ami_port:
            self.ami_port = free_port()

    # -- files -------------------------------------------------------------------------------
    @property
    def etc(self) -> Path:
        return self.workdir / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "asterisk.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "asterisk.out"

    def write(self) -> None:
        """(Re)write every configuration file."""
        self.etc.mkdir(parents=True, exist_ok=True)
        dirs = ("lib", "db", "keys", "spool", "run", "log")
        for d in dirs:
            (self.workdir / d).mkdir(exist_ok=True)
        self.conf.write_text(
            "[directories]\n"
            f"astetcdir => {self.etc}\n"
            f"astmoddir => {self.root / 'usr/lib/asterisk/modules'}\n"
            f"astdatadir => {self.root / 'var/lib/asterisk'}\n"
            f"astvarlibdir => {self.workdir / 'lib'}\n"
            f"astdbdir => {self.workdir / 'db'}\n"
            f"astkeydir => {self.workdir / 'keys'}\n"
            f"astspooldir => {self.workdir / 'spool'}\n"
            f"astrundir => {self.workdir / 'run'}\n"
            f"astlogdir => {self.workdir / 'log'}\n"
            "[options]\n"
            f"entityid = {self.eid}\n"
        )
        (self.etc / "modules.conf").write_text(
            "[modules]\nautoload = no\n" + "".join(f"load => {m}.so\n" for m in self.modules)
        )
        (self.etc / "manager.conf").write_text(
            self.manager_conf
            or f"[general]\nenabled = yes\nport = {self.ami_port}\nbindaddr = 127.0.0.1\n\n"
            f"[{AMI_USER}]\nsecret = {AMI_SECRET}\nread = all\nwrite = all\n"
        )
        (self.etc / "extensions.conf").write_text(
            "[general]\nautofallthrough = yes\n\n" + self.dialplan
        )
        (self.etc / "logger.conf").write_text(
            "[general]\n[logfiles]\nmessages.log => notice,warning,error\n"
        )
        for fname, text in self.files.items():
            (self.etc / fname).write_text(text)

    # -- process -----------------------------------------------------------------------------
    def _prefix(self) -> list[str]:
        if self.enter_pid is not None:
            return ["nsenter", "-t", str(self.enter_pid), "-m", "-n", "--"]
        if self.netns is not None:
            return ["ip", "netns", "exec", self.netns]
        return []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = str(self.root / "usr/lib")
        return env

    def start(self, timeout: float = 30.0) -> float:
        """Start (writing the files first if needed); return seconds until fully booted."""
        if not self.conf.exists():
            self.write()
        t0 = time.monotonic()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                [*self._prefix(), str(self.root / "usr/sbin/asterisk"), "-f", "-C", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
            )
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Asterisk {self.name} exited at start:\n{self.log_tail()}")
            if (self.workdir / "run/asterisk.ctl").exists():
                r = self.cli("core waitfullybooted", timeout=timeout, check=False)
                if r.returncode == 0 and "fully booted" in r.stdout.lower():
                    return time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"Asterisk {self.name} did not boot in {timeout}s:\n{self.log_tail()}")

    def cli(
        self, command: str, timeout: float = 20.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one CLI command through the instance's control socket (``asterisk -rx``)."""
        r = subprocess.run(
            [
                *self._prefix(),
                str(self.root / "usr/sbin/asterisk"),
                "-C",
                str(self.conf),
                "-rx",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(),
            check=False,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"asterisk -rx {command!r} failed: {r.stderr or r.stdout}")
        return r

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> float:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def messages(self) -> str:
        """Asterisk's own log file (notice and above)."""
        try:
            return (self.workdir / "log/messages.log").read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def asterisks(instances: Sequence[Asterisk]) -> Iterator[Sequence[Asterisk]]:
    """Start every instance (in order); always stop and remove them all."""
    try:
        for a in instances:
            a.write()
            a.start()
        yield instances
    finally:
        for a in instances:
            a.stop()
            a.cleanup()
