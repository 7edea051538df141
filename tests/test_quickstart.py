"""docs/quickstart.md, run as printed: two servers over the SIP link, from the Debian package.

The package is built (or taken from dist/ when newer than the sources) and installed once with
apt-get; then two network namespaces, pbx1 and pbx2, joined by a veth pair, each get their own
``/etc/pbxmesh``, ``/var/lib/pbxmesh``, ``/etc/corosync``, ``/var/lib/corosync`` and ``/run``
(bind mounts made by every command run "on" a server, so the page's paths are used as
printed). In each: a real corosync with the page's corosync.conf, a real Asterisk configured
only with what step 3 prints and says, and the unit's ExecStart as the unit's user (no
systemd here). Then every line of steps 6-9 runs on the server its comment names, and when the
comment lists what to see (``# on pbx2: 1234 State:InUse``), one line of its output must show
all those words (within a few seconds: the change travels).

What is substituted, and nothing else: the page's 10.0.0.1/10.0.0.2 by the veth addresses; the
.deb's file name by the built one (``apt-get -y`` for ``apt``); ``systemctl restart corosync``
and ``systemctl enable --now pbxmesh`` by ``corosync -f`` and the unit's ExecStart;
``asterisk -rx`` by the namespace's private Asterisk (tests/harness/asterisk.py).

One run per Asterisk build (about 15 s each, after some 30 s to build and install the
package): the page names no version, and both must work.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness.asterisk import Asterisk
from tests.harness.corosync import cleanup_shm, corosync_missing_reason
from tests.harness.docs import ROOT, doc_block
from tests.harness.fixtures import skip_or_fail

pytestmark = [pytest.mark.asterisk, pytest.mark.netns, pytest.mark.integration]

PAGE = "docs/quickstart.md"
UNIT = Path("/lib/systemd/system/pbxmesh.service")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # the installed /usr/bin/pbxmesh, not a venv's
#: What each server's commands see at the page's paths: (directory of the server's own, path).
MOUNTS = ("etc-pbxmesh", "var-lib-pbxmesh", "etc-corosync", "var-lib-corosync", "run")
TARGETS = ("/etc/pbxmesh", "/var/lib/pbxmesh", "/etc/corosync", "/var/lib/corosync", "/run")
_ENTER = (
    "set -e\n"
    + "".join(f'mount --bind "${i + 1}" {t}\n' for i, t in enumerate(TARGETS))
    + f'shift {len(TARGETS)}\nexec "$@"\n'
)
DOC_ADDRESSES = ("10.0.0.1", "10.0.0.2")


def _run(argv: list[str], timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the quick start installs a package and makes network namespaces: run as root"
    for tool in ("dpkg-deb", "apt-get", "setpriv", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: the quick start runs from the Debian package"
    return corosync_missing_reason(netns=True)


def _fresh_deb() -> Path:
    """dist/'s package when newer than every source and packaging file; else a new build."""
    debs = sorted((ROOT / "dist").glob("pbxmesh_*.deb"), key=lambda p: p.stat().st_mtime)
    sources = [
        p
        for d in ("src", "packaging")
        for p in (ROOT / d).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    newest = max(p.stat().st_mtime for p in [*sources, ROOT / "pyproject.toml", ROOT / "README.md"])
    if debs and debs[-1].stat().st_mtime > newest:
        return debs[-1]
    r = _run(["bash", "packaging/build-deb.sh"], timeout=900, cwd=ROOT)
    assert r.returncode == 0, f"packaging/build-deb.sh failed:\n{r.stderr[-3000:]}"
    return Path(r.stdout.strip().splitlines()[-1])


def _commands(block: str) -> list[tuple[str, str]]:
    """(command, comment) of each line of a shell block but its first (the block's title)."""
    out = []
    for line in block.splitlines()[1:]:
        command, _, comment = line.partition("  #")
        if command.strip():
            out.append((command.strip(), comment.strip()))
    return out


@pytest.fixture(scope="module")
def package() -> Iterator[None]:
    """Step 1 on the test machine (once for both servers), removed again at the end unless it
    was installed before."""
    skip_or_fail(_missing(), "quick-start")
    deb = _fresh_deb()
    ((command, _),) = _commands(doc_block("docs/quickstart.md", "# 1. on pbx1 and on pbx2"))
    doc_deb = re.fullmatch(r"apt install corosync (\./pbxmesh_\S+\.deb)", command)
    assert doc_deb, f"{PAGE} step 1 is not one 'apt install corosync ./pbxmesh_….deb': {command}"
    was_installed = _run(["dpkg", "-s", "pbxmesh"]).returncode == 0
    argv = ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=300"]
    argv += [*shlex.split(command.replace(doc_deb[1], str(deb.resolve())))[2:]]
    r = _run(argv, timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert r.returncode == 0, f"{' '.join(argv)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
    try:
        yield
    finally:
        if not was_installed:
            _run(["apt-get", "purge", "-y", "-qq", "-o", "DPkg::Lock::Timeout=300", "pbxmesh"])


@dataclass
class Server:
    """One of the page's servers: a network namespace and the directories behind its paths."""

    name: str
    netns: str
    address: str
    home: Path  # where the administrator stands: ./corosync.conf, ./authkey
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    star: Asterisk | None = None

    def command(self, argv: list[str]) -> list[str]:
        dirs = [str(self.home.parent / f"{self.name}-{m}") for m in MOUNTS]
        return ["ip", "netns", "exec", self.netns, "sh", "-c", _ENTER, "sh", *dirs, *argv]

    def run(self, line: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """One line of the page, run on this server."""
        argv = shlex.split(line)
        if argv[:2] == ["asterisk", "-rx"] and len(argv) == 3:
            assert self.star is not None, f"{self.name}: no Asterisk yet for {line}"
            return self.star.cli(argv[2], check=False)
        return _run(self.command(["sh", "-c", line]), timeout, cwd=self.home, env={"PATH": PATH})

    def start(self, argv: list[str], log: str, **kw: object) -> subprocess.Popen[bytes]:
        with open(self.home / log, "ab") as out:
            proc = subprocess.Popen(  # type: ignore[call-overload]
                self.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": PATH},
                **kw,
            )
        self.procs.append(proc)
        return proc  # type: ignore[no-any-return]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
            cleanup_shm(proc.pid)
        if self.star is not None:
            self.star.stop()
            self.star.cleanup()

    def logs(self) -> str:
        out = []
        for log in sorted(self.home.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-25:]
            out.append(f"--- {self.name} {log.name}\n" + "\n".join(tail))
        if self.star is not None:
            out.append(f"--- {self.name} asterisk\n{self.star.log_tail(25)}")
        return "\n".join(out)


@contextlib.contextmanager
def two_servers() -> Iterator[tuple[Server, Server]]:
    """pbx1 and pbx2: namespaces joined by a veth pair, each with the package's files copied
    into directories of its own."""
    tag = secrets.token_hex(2)
    work = Path(tempfile.mkdtemp(prefix="pbxm-quickstart-"))
    servers = tuple(
        Server(f"pbx{i}", f"qs{tag}p{i}", f"10.231.{int(tag[:2], 16)}.{i}", work / f"pbx{i}")
        for i in (1, 2)
    )
    a, b = servers
    made: list[str] = []
    try:
        for s in servers:
            _check(["ip", "netns", "add", s.netns])
            made.append(s.netns)
            _check(["ip", "-n", s.netns, "link", "set", "lo", "up"])
        _check(["ip", "-n", a.netns, "link", "add", "eth0", "type", "veth",
                "peer", "name", "eth0", "netns", b.netns])  # fmt: skip
        user = pwd.getpwnam("pbxmesh")
        group = grp.getgrnam("pbxmesh")
        for s in servers:
            _check(["ip", "-n", s.netns, "addr", "add", f"{s.address}/24", "dev", "eth0"])
            _check(["ip", "-n", s.netns, "link", "set", "eth0", "up"])
            s.home.mkdir()
            shutil.copytree("/etc/pbxmesh", work / f"{s.name}-etc-pbxmesh")
            shutil.copytree("/etc/corosync", work / f"{s.name}-etc-corosync")
            for m in ("var-lib-pbxmesh", "var-lib-corosync", "run"):
                (work / f"{s.name}-{m}").mkdir()
            # As the package's postinst makes /var/lib/pbxmesh.
            os.chown(work / f"{s.name}-var-lib-pbxmesh", user.pw_uid, group.gr_gid)
            (work / f"{s.name}-var-lib-pbxmesh").chmod(0o750)
        yield a, b
    finally:
        for s in servers:
            with contextlib.suppress(Exception):
                s.stop()
        for ns in made:
            _run(["ip", "netns", "del", ns])
        shutil.rmtree(work, ignore_errors=True)


def _check(argv: list[str]) -> None:
    r = _run(argv, timeout=30)
    assert r.returncode == 0, f"{' '.join(argv)}: {r.stderr.strip()}"


def _ok(s: Server, line: str) -> str:
    r = s.run(line)
    assert r.returncode == 0, f"{s.name}: {line} failed ({r.returncode}):\n{r.stdout}{r.stderr}"
    return r.stdout


def _shows(out: str, words: list[str]) -> bool:
    return any(set(words) <= set(row.split()) for row in out.splitlines())


def _until_shown(s: Server, line: str, words: list[str], within: float = 15) -> str:
    """Run ``line`` on ``s`` until it succeeds and one line of its output shows every word."""
    deadline = time.monotonic() + within
    while True:
        r = s.run(line)
        if r.returncode == 0 and _shows(r.stdout, words):
            return r.stdout
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{s.name}: {line} (exit {r.returncode}) does not show {words} in {within} s:"
                f"\n{r.stdout}{r.stderr}"
            )
        time.sleep(0.3)


def _asterisk_parts(printed: str) -> dict[str, str]:
    """asterisk-config's output split by the comment line that names each file."""
    parts: dict[str, str] = {}
    for chunk in re.split(r"\n(?=; \w+\.conf)", printed.strip()):
        name = re.match(r"; (\w+\.conf)", chunk)
        assert name, f"asterisk-config printed a part that names no file:\n{chunk}"
        parts[name[1]] = chunk + "\n"
    return parts


def _loads(text: str) -> list[str]:
    return re.findall(r"^load => (\w+)\.so", text, re.M)


def _configure_asterisk(s: Server) -> None:
    """Step 3 on one server: its Asterisk, configured only with what the page says."""
    lines = _commands(doc_block("docs/quickstart.md", "# 3. on pbx1 and on pbx2"))
    assert [c for c, _ in lines] == ["pbxmesh check-config", "pbxmesh asterisk-config"], lines
    _ok(s, "pbxmesh check-config")
    parts = _asterisk_parts(_ok(s, "pbxmesh asterisk-config"))
    assert set(parts) == {"asterisk.conf", "modules.conf", "pjsip.conf", "manager.conf"}, parts
    eid = re.search(r"^entityid = (\S+)$", parts["asterisk.conf"], re.M)
    assert eid, parts["asterisk.conf"]
    general = doc_block("docs/quickstart.md", "; /etc/asterisk/manager.conf: [general]")
    more = doc_block("docs/quickstart.md", "; /etc/asterisk/modules.conf, beside the printed lines")
    s.star = Asterisk(
        s.name,
        eid[1],
        modules=(*_loads(parts["modules.conf"]), *_loads(more)),
        dialplan=doc_block("docs/quickstart.md", "; /etc/asterisk/extensions.conf on both servers"),
        files={"pjsip.conf": parts["pjsip.conf"]},
        manager_conf=general + "\n" + parts["manager.conf"],
        netns=s.netns,
    )
    s.star.write()
    s.star.start()


def _corosync(a: Server, b: Server) -> None:
    """Step 4: the key on pbx1, copied to pbx2; the page's corosync.conf on both."""
    (keygen, _), *_ = _commands(doc_block("docs/quickstart.md", "# 4a. once, on pbx1"))
    _ok(a, keygen)
    shutil.copy2(a.home / "authkey", b.home / "authkey")
    conf = doc_block(
        "docs/quickstart.md", "# /etc/corosync/corosync.conf, the same on pbx1 and pbx2"
    )
    for doc_address, s in zip(DOC_ADDRESSES, (a, b), strict=True):
        assert conf.count(f"ring0_addr: {doc_address}\n") == 1, conf
        conf = conf.replace(f"ring0_addr: {doc_address}\n", f"ring0_addr: {s.address}\n")
    for s in (a, b):
        (s.home / "corosync.conf").write_text(conf)
        for command, _ in _commands(doc_block("docs/quickstart.md", "# 4b. on pbx1 and on pbx2")):
            if command == "systemctl restart corosync":
                s.start(["corosync", "-f"], "corosync.log")
            else:
                _ok(s, command)
    for s in (a, b):
        _until_shown(s, "corosync-cfgtool -s", ["connected"], within=30)


def _start_pbxmesh(s: Server) -> None:
    """Step 5: ``systemctl enable --now pbxmesh`` is the unit's ExecStart, as its user."""
    unit = dict(
        line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"^\w+=", line)
    )
    commands = _commands(doc_block("docs/quickstart.md", "# 5. on pbx1 and on pbx2"))
    assert [c for c, _ in commands] == ["systemctl enable --now pbxmesh", "pbxmesh status"]
    as_user = ["setpriv", f"--reuid={unit['User']}", f"--regid={unit['Group']}", "--init-groups"]
    as_user += ["--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--reset-env"]
    s.start([*as_user, *shlex.split(unit["ExecStart"])], "pbxmesh.log",
            cwd="/", umask=int(unit["UMask"], 8))  # fmt: skip
    deadline = time.monotonic() + 30
    while (r := s.run("pbxmesh status")).returncode != 0:
        assert s.procs[-1].poll() is None, f"{s.name}: pbxmesh exited\n{s.logs()}"
        assert time.monotonic() < deadline, f"{s.name}: pbxmesh status:\n{r.stdout}{r.stderr}"
        time.sleep(0.3)


def _play(block: str, servers: dict[str, Server]) -> None:
    """Every line on the server its comment names; ``on pbxN: words`` must show the words."""
    for command, comment in _commands(block):
        where = re.fullmatch(r"on (pbx\d)(?:: (.*))?", comment)
        assert where, f"{PAGE}: {command!r} does not say where it runs ({comment!r})"
        s = servers[where[1]]
        if where[2]:
            _until_shown(s, command, where[2].split())
        else:
            _ok(s, command)


def test_the_quick_start_on_two_servers(require_asterisk: None, package: None) -> None:
    with two_servers() as (a, b):
        try:
            toml = doc_block("docs/quickstart.md", "# /etc/pbxmesh/pbxmesh.toml on pbx1")
            assert toml.count('name = "pbx1"\n') == 1, toml
            for s in (a, b):
                conf = s.home.parent / f"{s.name}-etc-pbxmesh/pbxmesh.toml"
                conf.write_text(toml.replace('name = "pbx1"\n', f'name = "{s.name}"\n'))
                os.chown(conf, 0, grp.getgrnam("pbxmesh").gr_gid)
                conf.chmod(0o640)
                _configure_asterisk(s)
            _corosync(a, b)
            for s in (a, b):
                _start_pbxmesh(s)
            # 6. on either server: both members, every device, the hints.
            check = [
                c for c, _ in _commands(doc_block("docs/quickstart.md", "# 6. on either server"))
            ]
            assert check == ["pbxmesh members", "pbxmesh devices", 'asterisk -rx "core show hints"']
            for s in (a, b):
                for other in (a, b):
                    mark = ["(this", "node)"] if other is s else []
                    _until_shown(s, check[0], [other.name, *mark, other.address, "Yes"])
                _ok(s, check[1])
                hints = _until_shown(
                    s, check[2], ["1234@quickstart", "State:Idle", "Presence:not_set"]
                )
                assert _shows(
                    hints, ["1000@quickstart", "MWI:1000@default", "State:Unavailable"]
                ), hints
            servers = {s.name: s for s in (a, b)}
            _play(doc_block("docs/quickstart.md", "# 7. device state: set on pbx1"), servers)
            _play(doc_block("docs/quickstart.md", "# 8. MWI: 2 new, 1 old"), servers)
            _play(doc_block("docs/quickstart.md", "# 9. presence: alice's DND"), servers)
        except BaseException:
            print(a.logs(), b.logs(), sep="\n")
            raise
