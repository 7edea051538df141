"""``pbxmesh check-config``'s file checks: every file the configuration names, read as the
daemon will read it, before the daemon needs it.

:func:`check_files` returns one line per problem (empty: all good). It reads, never writes:
TLS files are loaded into an SSL context, the node key is parsed and compared with this
node's own ``[security.peers]`` entry, every peer's public key is parsed, nkey seeds and
``.creds`` files are read (and parsed when the ``nkeys`` package is there).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from .config import Config, NatsSection
from .errors import ConfigError

__all__ = ["check_files"]


def _readable(path: Path, what: str) -> str | None:
    if not path.exists():
        return f"{what} {path}: no such file"
    if not os.access(path, os.R_OK):
        return f"{what} {path}: not readable by this user (uid {os.getuid()})"
    try:
        path.read_bytes()
    except OSError as exc:
        return f"{what} {path}: {exc.strerror}"
    return None


def check_files(cfg: Config) -> list[str]:
    problems: list[str] = []
    if cfg.cluster.transport == "nats":
        problems += _nats_problems(cfg.cluster.nats)
    problems += _security_problems(cfg)
    return problems


def _nats_problems(n: NatsSection) -> list[str]:
    """``[cluster.nats]``'s files: readable, and what each should be."""
    problems = _tls_problems(n)
    if n.nkey_seed is not None:
        problem = _readable(n.nkey_seed, "[cluster.nats] nkey_seed (a path to the seed file)")
        if problem is None:
            problem = _check_seed(n.nkey_seed)
        if problem:
            problems.append(problem)
    if n.creds is not None:
        problem = _readable(n.creds, "[cluster.nats] creds")
        if problem:
            problems.append(problem)
    return problems


def _tls_problems(n: NatsSection) -> list[str]:
    """``tls_ca``, and ``tls_cert`` with ``tls_key``: readable, and a CA or a key pair."""
    problems: list[str] = []
    if n.tls_ca is not None:
        problem = _readable(n.tls_ca, "[cluster.nats] tls_ca")
        if problem is None:
            try:
                ssl.create_default_context(cafile=os.fspath(n.tls_ca))
            except (ssl.SSLError, ValueError) as exc:
                problem = f"[cluster.nats] tls_ca {n.tls_ca}: not a PEM CA certificate ({exc})"
        if problem:
            problems.append(problem)
    if n.tls_cert is not None and n.tls_key is not None:
        for path, what in ((n.tls_cert, "tls_cert"), (n.tls_key, "tls_key")):
            problem = _readable(path, f"[cluster.nats] {what}")
            if problem:
                problems.append(problem)
        if not problems:
            try:
                ctx = ssl.create_default_context()
                ctx.load_cert_chain(os.fspath(n.tls_cert), os.fspath(n.tls_key))
            except (ssl.SSLError, ValueError) as exc:
                problems.append(
                    f"[cluster.nats] tls_cert/tls_key {n.tls_cert}: not a certificate and "
                    f"its key ({exc})"
                )
    return problems


def _security_problems(cfg: Config) -> list[str]:
    """``[security]``: the key readable, the peers valid and this node among them."""
    sec = cfg.security
    if sec.key is not None:
        problem = _readable(sec.key, "[security] key")
        if problem:
            return [problem]
    if not (sec.key or sec.peers):
        return []
    from .security import build_peers

    try:
        peers, _ = build_peers(sec, cfg.node.name)
    except ConfigError as exc:
        return [str(exc)]
    if peers and cfg.node.name not in {p.name for p in peers}:
        return [
            f"[security.peers] has no entry for this node ({cfg.node.name}): the others "
            "would reject its frames as unknown-origin"
        ]
    return []


def _check_seed(path: Path) -> str | None:
    try:
        import nkeys
    except ImportError:
        return None  # read above; the transport parses it (nats-py needs nkeys then)
    try:
        seed = path.read_bytes().strip()
        nkeys.from_seed(bytearray(seed))
    except Exception as exc:
        return f"[cluster.nats] nkey_seed {path}: not an nkey seed ({type(exc).__name__})"
    return None
