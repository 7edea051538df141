"""The commands that write Asterisk's side without a running node: ``asterisk-config`` (the
local Asterisk's configuration for this node's links) and ``dialplan-hints``."""

from __future__ import annotations

import argparse
import os

from .cli_common import EXIT_USAGE, CliError
from .config import Config, load_config
from .eid import EID, load_or_create_eid

__all__ = ["asterisk_config", "dialplan_hints", "node_eid"]


def asterisk_config(args: argparse.Namespace) -> int:
    """The local Asterisk's configuration for this node's links, ready to include."""
    from .links.sip.asterisk_conf import asterisk_conf, manager_conf, node_modules_conf

    cfg = load_config(args.config)
    ast = cfg.asterisk
    if ast is None:
        if cfg.ring is not None:
            print(
                "; [asterisk.ring]: this node bridges a res_corosync ring and has no Asterisk of\n"
                "; its own; the ring's Asterisks keep their res_corosync.conf (docs/ring.md)"
            )
            return 0
        raise CliError(
            f"{cfg.path} has no [asterisk] link: add [asterisk] (AMI) or [asterisk.sip] "
            "(docs/asterisk.md) to configure one",
            1,
        )
    eid = str(node_eid(cfg))
    sip = None
    if ast.sip is not None:
        from .linkconfig import sip_link_config
        from .links.sip.asterisk_conf import pjsip_conf

        sip = sip_link_config(ast)
    if args.freepbx:
        from .links.sip.asterisk_conf import freepbx_conf, node_modules

        manager = None
        if ast.ami is not None:
            manager = manager_conf(
                ast.username, ast.secret, permit(ast.ami[0]), hints=ast.hints is not None
            )
        mods = node_modules(sip, ast.ami is not None, presence=ast.presence, mwi=ast.mwi)
        print(
            freepbx_conf(eid, sip, transport=not args.no_transport, modules=mods, manager=manager),
            end="",
        )
        return 0
    parts = [asterisk_conf(eid)]
    parts.append(node_modules_conf(sip, ast.ami is not None, presence=ast.presence, mwi=ast.mwi))
    if sip is not None:
        parts.append(pjsip_conf(sip, transport=not args.no_transport))
    if ast.ami is not None:
        parts.append(
            manager_conf(ast.username, ast.secret, permit(ast.ami[0]), hints=ast.hints is not None)
        )
    print("\n".join(parts), end="")
    return 0


def node_eid(cfg: Config) -> EID:
    """This node's EID, as the daemon finds it (``[node] eid``, the signing key, state_dir)."""
    if cfg.node.eid is not None:
        return cfg.node.eid
    if cfg.security.key is not None:
        from .security import eid_for_key, load_private_key

        return eid_for_key(load_private_key(cfg.security.key).public_key())
    state_dir = cfg.node.state_dir
    if not (state_dir / "eid").exists() and not state_dir.is_dir():
        raise CliError(
            f"{state_dir} does not exist, so this node has no entity id yet: create it (the "
            "package does) or set [node] eid",
            1,
        )
    try:
        return load_or_create_eid(state_dir)
    except OSError as exc:
        raise CliError(
            f"cannot read or create {state_dir / 'eid'} ({exc.strerror}): run as root or as the "
            "daemon's user, or set [node] eid",
            1,
        ) from None


def permit(host: str) -> str:
    return "127.0.0.1" if host in ("localhost", "::1", "") else host


def dialplan_hints(args: argparse.Namespace) -> int:
    from .links.ami.counterparts import DEFAULT_TEMPLATE, hint_lines

    template = args.template
    if template is None:
        template = DEFAULT_TEMPLATE
        if os.path.exists(args.config):
            cfg = load_config(args.config)
            if cfg.asterisk is not None:
                template = cfg.asterisk.remote_template
    mapping = {}
    for item in args.mapping:
        exten, sep, device = item.partition("=")
        if not sep or not exten or not device:
            raise CliError(f"{item!r} is not EXTEN=DEVICE (e.g. 1234=Custom:mystate)", EXIT_USAGE)
        mapping[exten] = device
    print("\n".join(hint_lines(mapping, args.context, template)))
    return 0
