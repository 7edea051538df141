"""docs/corosync.md §1 as printed: its corosync.conf passes ``corosync -t`` and two nodes
installed with its commands form a cluster.

Each node is a network namespace (tests/harness/corosync.py); the page's ``/etc/corosync``
becomes a per-node directory and its addresses the namespaces' ones. Besides those, the only
changes are what two daemons on one host need: ``sched_rr: no`` (the page's own advice for
labs), a state directory and a log file each. ``systemctl restart corosync`` is the harness
starting the daemon on the installed file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.harness.corosync import Cluster, corosync_missing_reason, three_node_cluster
from tests.harness.docs import doc_block
from tests.harness.fixtures import skip_or_fail

pytestmark = [pytest.mark.integration, pytest.mark.netns]


def _node_conf(cluster: Cluster, etc: Path, workdir: Path) -> str:
    text = doc_block("docs/corosync.md", "totem {")
    for i in (1, 2, 3):
        text = text.replace(f"ring0_addr: 10.0.0.{i}\n", f"ring0_addr: {cluster.address(i)}\n")
    text = text.replace("/etc/corosync", str(etc))
    text = text.replace(
        "    sched_rr: yes\n",
        f"    sched_rr: no\n    state_dir: {workdir / 'state'}\n    move_to_root_cgroup: no\n",
    )
    text = text.replace(
        "    to_syslog: yes\n",
        f"    to_syslog: no\n    to_logfile: yes\n    logfile: {workdir / 'corosync.log'}\n",
    )
    assert "10.0.0." not in text and "sched_rr: no" in text and "logfile:" in text
    return text


def _sh(cluster: Cluster, i: int, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cluster.command(i, "sh", "-ec", script),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_corosync_conf_of_the_page_starts_two_nodes(tmp_path: Path) -> None:
    skip_or_fail(corosync_missing_reason(netns=True), "corosync")
    install = doc_block("docs/corosync.md", "# once, on one server: the shared key")
    # the page's steps: the key once, then per node install + check; systemctl is the harness
    before, sep, after = install.partition("systemctl restart corosync\n")
    assert sep, "the page no longer restarts corosync after installing the file"
    cut = before.index("\n# on every server:") + 1
    keygen, per_node = before[:cut], before[cut:]
    assert "corosync-keygen" in keygen
    with three_node_cluster(token_ms=1000, base=tmp_path, start=False, size=2) as cluster:
        src = tmp_path / "from-admin"
        src.mkdir()
        key_script = keygen.replace("/etc/corosync/authkey", str(src / "authkey"))
        res = _sh(cluster, 1, key_script, src)
        assert res.returncode == 0, res.stderr
        for i in (1, 2):
            node = cluster.nodes[i]
            etc = node.workdir / "etc-corosync"
            etc.mkdir()
            (node.workdir / "state").mkdir()
            here = tmp_path / f"copy{i}"
            here.mkdir()
            shutil.copy(src / "authkey", here / "authkey")
            (here / "corosync.conf").write_text(_node_conf(cluster, etc, node.workdir))
            script = per_node.replace("/etc/corosync", str(etc))
            script = re.sub(
                r"^corosync -t\b", f"corosync -t -c {etc}/corosync.conf", script, flags=re.M
            )
            res = _sh(cluster, i, script, here)
            assert res.returncode == 0, f"node {i}: {script}\n{res.stdout}{res.stderr}"
            assert res.stdout == "", res.stdout  # "prints nothing and exits 0"
            assert (etc / "authkey").stat().st_mode & 0o777 == 0o400
            # systemctl restart corosync: the daemon on the installed file
            shutil.copy(etc / "corosync.conf", node.conf)
            cluster.start(i)
        cluster.wait_formed((1, 2))
        checks = [ln.split("#")[0].strip() for ln in after.splitlines() if ln.strip()]
        assert checks == ["corosync-cfgtool -s", "corosync-quorumtool -l"], checks
        status = cluster.run(1, *checks[0].split()).stdout
        assert re.search(r"nodeid:?\s+2:?\s+connected", status), status
        members = cluster.run(1, *checks[1].split()).stdout
        assert "pbx1" in members and "pbx2" in members, members
