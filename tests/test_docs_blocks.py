"""Every fenced block of README.md and docs/*.md is run by a test, or listed here with why not.

A block is *run* when some test file calls ``doc_block("page", "first line…")`` with literal
arguments (tests/harness/docs.py); this file reads every test file's syntax tree for those
calls, so it needs no other test to run. A block that is neither run nor in
:data:`NOT_RUN` fails here: an administrator copies it, so it must be checked or its reason
to be left out written down. A :data:`NOT_RUN` entry that matches no block fails too.
"""

from __future__ import annotations

import ast

from tests.harness.docs import ROOT, Block, matching, page_blocks, pages

#: (page, start of the first line) -> why the block is not run by a test.
NOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "bash scripts/demo.sh"): "installs packages and runs the demo or the whole "
    "suite: what CI runs, not one test",
    ("README.md", "pbxmesh members "): "a tour of the CLI against a running cluster and its "
    "Asterisk; tests/test_cli_nodes.py runs these commands against running nodes",
    ("docs/architecture.md", "   Asterisk (stock)"): "a diagram, not a file or a command",
    ("docs/install.md", "apt install python3-venv"): "builds the .deb (downloads wheels): "
    "scripts/deb-check.sh runs packaging/build-deb.sh in CI",
    ("docs/install.md", "apt install ./pbxmesh_0.1.0"): "installs the built .deb with apt: "
    "scripts/deb-check.sh does it in CI",
    ("docs/install.md", "editor /etc/pbxmesh"): "an editor and systemd units of an installed "
    "package: scripts/deb-systemd-check.sh runs them under a real systemd",
    ("docs/install.md", "systemctl edit pbxmesh"): "interactive systemd drop-in editing",
    ("docs/install.md", "runuser -u pbxmesh"): "needs the package's pbxmesh user: "
    "scripts/deb-check.sh runs keygen as that user",
    ("docs/install.md", "apt install ./pbxmesh_0.2.0"): "an upgrade to a later package: "
    "scripts/deb-check.sh reinstalls the package",
    ("docs/install.md", "apt remove pbxmesh"): "removes and purges the installed package: "
    "scripts/deb-check.sh does it in CI",
    ("docs/nats.md", "          site 1"): "a diagram, not a file or a command",
    ("docs/nats.md", "accounts {"): "an excerpt of what make-accounts.sh writes, which "
    "tests/test_docs_nats.py runs and feeds to nats-server",
    ("docs/nats.md", "systemctl daemon-reload"): "systemd on the hub servers: "
    "tests/test_docs_nats.py runs the drop-in's ExecStart line itself",
    ("docs/nats.md", "pbxmesh keygen"): "tests/test_docs_nats.py runs keygen for each node with "
    "its -c file (the page's file paths are per-node temp dirs there)",
    ("docs/nats.md", "pbxmesh nats-accounts accounts.toml -o accounts.conf --generate"): "a "
    "variant of make-accounts.sh; generated passwords are tested in tests/test_nats_operations.py",
    ("docs/reliability.md", "python bench/chaos.py"): "chaos runs of minutes to hours, "
    "not a unit of the test suite",
    ("docs/ring.md", "# on any ring node"): "edits a live ring (corosync-cfgtool -R, systemctl); "
    "corosync-config's output is tested in tests/test_corosync_config.py",
    ("docs/asterisk.md", "[support]   ; queues.conf, SIP link"): "needs two servers linked over "
    "SIP through a cluster; tried by hand with Custom: agents (issue 26), no test yet",
    ("docs/ring.md", "$ pbxmesh members"): "sample output of a bridge beside three real ring "
    "Asterisks (tests/test_ring_asterisk.py checks the same members through the API)",
}


def _read_calls() -> set[tuple[str, str]]:
    """Every ``doc_block("page", "first")`` call with literal arguments in the test files."""
    found = set()
    for path in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name != "doc_block" or len(node.args) != 2:
                continue
            page, first = node.args
            if isinstance(page, ast.Constant) and isinstance(first, ast.Constant):
                found.add((str(page.value), str(first.value)))
    return found


def test_every_doc_block_is_run_or_listed_with_a_reason() -> None:
    read = _read_calls()
    covered: dict[Block, str] = {}
    problems = []
    for page, first in sorted(read):
        blocks = matching(page, first)
        if len(blocks) != 1:
            problems.append(f"a test reads {page} block {first!r}: {len(blocks)} blocks match")
        for b in blocks:
            covered[b] = "run"
    for (page, first), reason in NOT_RUN.items():
        assert reason.strip(), f"NOT_RUN {page} {first!r} gives no reason"
        blocks = matching(page, first)
        if len(blocks) != 1:
            problems.append(f"NOT_RUN names {page} block {first!r}: {len(blocks)} blocks match")
        for b in blocks:
            if b in covered:
                problems.append(f"{b} is run by a test and listed in NOT_RUN: drop the entry")
            covered[b] = reason
    for page in pages():
        for b in page_blocks(page):
            if b not in covered:
                problems.append(
                    f"{b} is run by no test: run it (doc_block) or list it in NOT_RUN with why"
                )
    assert not problems, "\n".join(problems)


def test_the_scan_finds_the_known_readers() -> None:
    """The coverage test is only as good as its scan: a known call must be found."""
    read = _read_calls()
    assert ("docs/nats.md", "# /etc/hosts") in read
