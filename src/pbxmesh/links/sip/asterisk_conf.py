"""The Asterisk configuration a node's links need: asterisk.conf's entity id, modules.conf
lines, pjsip.conf sections (SIP link) and manager.conf's account (AMI link).

``pbxmesh asterisk-config`` prints them; the real-Asterisk tests configure their Asterisks with
the same text (modules.conf with ``autoload = no`` and exactly the printed modules), so what an
administrator is told to include is what the tests run.

The objects, all named after the link's resource (``pbxmesh`` by default):

* a ``transport`` on the address of ``uri`` (left out with ``transport=False`` when Asterisk
  already binds one there);
* an ``endpoint`` with an ``identify`` matching the listener's address: Asterisk accepts a
  PUBLISH only from an identified endpoint (500 otherwise); with a secret, the endpoint's
  ``auth`` makes Asterisk challenge our PUBLISH;
* two ``outbound-publish`` (``asterisk-devicestate``, ``asterisk-mwi``) to the listener, with
  ``outbound_auth`` when there is a secret (we challenge Asterisk's PUBLISH);
* the ``inbound-publication`` named by ``uri``'s user and the ``asterisk-publication`` that
  accepts device and mailbox states and answers refresh requests through the outbound ones.
"""

from __future__ import annotations

from typing import Final

from .link import SipLinkConfig, uri_hostport

__all__ = [
    "AMI_MODULES",
    "BASE_MODULES",
    "FREEPBX_PJSIP_FILES",
    "MODULES",
    "PRESENCE_MODULES",
    "asterisk_conf",
    "freepbx_conf",
    "manager_conf",
    "modules_conf",
    "node_modules",
    "node_modules_conf",
    "pjsip_conf",
]

#: Every link: the dialplan (extensions.conf and its hints) and ``Custom:`` device states.
BASE_MODULES: Final = ("pbx_config", "func_devstate")
#: The AMI link's DeviceStateChange events and DeviceStateList (the manager itself is part of
#: Asterisk's core); needed beside a SIP link too.
AMI_MODULES: Final = ("res_manager_devicestate",)
#: Presence over AMI: PRESENCE_STATE() and PresenceStateChange events.
PRESENCE_MODULES: Final = ("func_presencestate", "res_manager_presencestate")
#: Remote MWI over AMI (MWIUpdate); never beside app_voicemail, which then declines to load.
MWI_EXTERNAL_MODULES: Final = ("res_mwi_external", "res_mwi_external_ami")
#: Phones subscribing to message-summary get remote MWI (SIP link).
PHONE_MWI_MODULES: Final = ("res_pjsip_mwi", "res_pjsip_mwi_body_generator")

#: What Asterisk must load (reference: sip-publish.md §1). The last two avoid an error line
#: per outgoing PUBLISH and a warning per incoming request, and raise the sustained rate.
MODULES: Final = (
    "res_sorcery_config",
    "res_sorcery_memory",
    "res_sorcery_astdb",
    "res_pjproject",
    "res_pjsip",
    "res_pjsip_pubsub",
    "res_pjsip_outbound_publish",
    "res_pjsip_publish_asterisk",
    "res_pjsip_endpoint_identifier_ip",
    "res_pjsip_session",
    "res_pjsip_authenticator_digest",
)
#: Also needed when a secret is set: Asterisk answers our challenge with it.
AUTH_MODULES: Final = ("res_pjsip_outbound_authenticator_digest",)


def modules_conf(config: SipLinkConfig) -> str:
    """The modules the SIP link itself needs (part of :func:`node_modules_conf`)."""
    mods = MODULES + (AUTH_MODULES if config.secret is not None else ())
    lines = ["; modules.conf, [modules]: what the pbxmesh SIP link needs"]
    lines += [f"load => {m}.so" for m in mods]
    return "\n".join(lines) + "\n"


_WHY: Final = {
    "pbx_config": "the dialplan and its hints",
    "func_devstate": "Custom: device states",
    "res_manager_devicestate": "DeviceStateChange events, DeviceStateList",
    "func_presencestate": "presence: PRESENCE_STATE()",
    "res_manager_presencestate": "presence: PresenceStateChange events",
    "res_pjsip_session": "else an ERROR line per outgoing PUBLISH",
    "res_pjsip_authenticator_digest": "else a WARNING per incoming request",
    "res_pjsip_mwi": "phones get remote MWI (message-summary)",
}


def node_modules(
    sip: SipLinkConfig | None, ami: bool, *, presence: bool = True, mwi: bool = True
) -> tuple[str, ...]:
    """The modules a node's links need (besides Asterisk's core, which holds the manager)."""
    mods: tuple[str, ...] = BASE_MODULES
    if sip is not None:
        mods += MODULES + (AUTH_MODULES if sip.secret is not None else ()) + PHONE_MWI_MODULES
    if ami:
        # Beside SIP too: the AMI link lists device states (DeviceStateList) at every connect.
        mods += AMI_MODULES
        mods += PRESENCE_MODULES if presence else ()
        mods += MWI_EXTERNAL_MODULES if sip is None and mwi else ()
    return mods


def node_modules_conf(
    sip: SipLinkConfig | None, ami: bool, *, presence: bool = True, mwi: bool = True
) -> str:
    """modules.conf's ``load =>`` lines for a node's links: with ``autoload = no`` exactly
    these (and your own); with ``autoload = yes`` none of them may be ``noload``ed."""
    lines = ["; modules.conf, [modules]: with autoload = no, load these (and your own)"]
    for m in node_modules(sip, ami, presence=presence, mwi=mwi):
        if m == MWI_EXTERNAL_MODULES[0]:
            lines += [
                "; remote MWI over AMI; leave the next two out where app_voicemail runs",
                "; (it does not load beside them: docs/asterisk.md, Voicemail on the receiving",
                "; server)",
            ]
        why = _WHY.get(m)
        line = f"load => {m}.so"
        lines.append(f"{line:<41} ; {why}" if why else line)
    return "\n".join(lines) + "\n"


def asterisk_conf(eid: str) -> str:
    """asterisk.conf's ``[options]`` line: this server's entity id, the pbxmesh node's own."""
    return (
        "; asterisk.conf, [options]: this server's entity id, the same as its pbxmesh node's\n"
        f"entityid = {eid}\n"
    )


def pjsip_conf(config: SipLinkConfig, *, transport: bool = True) -> str:
    """The link's pjsip.conf sections, for one file."""
    out = _pjsip_header(config)
    for _kind, lines in _pjsip_sections(config, transport=transport):
        out += ["", *lines]
    return "\n".join(out) + "\n"


def _pjsip_header(config: SipLinkConfig) -> list[str]:
    lhost, lport = config.listen
    return [
        "; pjsip.conf: the link to pbxmesh (SIP PUBLISH, res_pjsip_publish_asterisk)",
        f"; pbxmesh listens on {lhost}:{lport} ({config.transport}) and publishes to {config.uri}",
    ]


def _pjsip_sections(config: SipLinkConfig, *, transport: bool) -> list[tuple[str, list[str]]]:
    """The link's pjsip.conf sections in order, each with its object type (``transport``,
    ``auth``, ``endpoint``, ``identify``, or ``publish`` for the publication objects)."""
    name = config.resource
    inbound = _user(config.uri)
    host, port = uri_hostport(config.uri)
    lhost, lport = config.listen
    match = "127.0.0.1" if lhost in ("0.0.0.0", "::", "") else lhost
    proto = config.transport
    params = ";transport=tcp" if proto == "tcp" else ""
    lh = f"[{lhost}]" if ":" in lhost else lhost
    server_uri = f"sip:{name}@{match if lhost in ('0.0.0.0', '::', '') else lh}:{lport}{params}"
    out: list[tuple[str, list[str]]] = []
    if transport:
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        out.append(
            (
                "transport",
                [
                    f"[{name}-transport-{proto}]   ; leave out if a transport already binds {bind}",
                    "type = transport",
                    f"protocol = {proto}",
                    f"bind = {bind}",
                ],
            )
        )
    auth = config.username is not None and config.secret is not None
    if auth:
        out.append(
            (
                "auth",
                [
                    f"[{name}-auth]",
                    "type = auth",
                    "auth_type = userpass",
                    f"username = {config.username}",
                    f"password = {config.secret}",
                ],
            )
        )
    endpoint = [
        f"[{name}]",
        "type = endpoint",
        "context = pbxmesh-none   ; no calls: PUBLISH only",
        "disallow = all",
        "allow = ulaw",
    ]
    if auth:
        endpoint.append(f"auth = {name}-auth   ; Asterisk challenges pbxmesh's PUBLISH")
    out.append(("endpoint", endpoint))
    out.append(
        ("identify", [f"[{name}]", "type = identify", f"endpoint = {name}", f"match = {match}"])
    )
    for suffix, event in (("devicestate", "asterisk-devicestate"), ("mwi", "asterisk-mwi")):
        publish = [
            f"[{name}-{suffix}]",
            "type = outbound-publish",
            f"server_uri = {server_uri}",
            f"event = {event}",
        ]
        if proto == "tcp":
            publish.append(
                f"transport = {name}-transport-tcp   ; a TCP transport (yours, with --no-transport)"
            )
        if auth:
            publish.append(f"outbound_auth = {name}-auth")
        out.append(("publish", publish))
    out.append(
        (
            "publish",
            [
                f"[{inbound}]   ; named by the user part of [asterisk.sip] uri",
                "type = inbound-publication",
                f"endpoint = {name}",
                f"event_asterisk-devicestate = {name}",
                f"event_asterisk-mwi = {name}",
            ],
        )
    )
    out.append(
        (
            "publish",
            [
                f"[{name}]",
                "type = asterisk-publication",
                f"devicestate_publish = {name}-devicestate",
                f"mailboxstate_publish = {name}-mwi",
                "device_state = yes",
                "mailbox_state = yes",
            ],
        )
    )
    return out


def manager_conf(
    username: str, secret: str, permit: str = "127.0.0.1", *, hints: bool = False
) -> str:
    """The AMI account; ``hints`` ([asterisk.hints]) adds ``system`` to ``write``, the class of
    ``DialplanExtensionAdd``/``Remove``."""
    return (
        "; manager.conf: the AMI account of pbxmesh (needs [general] enabled = yes)\n"
        f"[{username}]\n"
        f"secret = {secret}\n"
        "deny = 0.0.0.0/0.0.0.0\n"
        f"permit = {permit}/255.255.255.255\n"
        "read = call,reporting,command\n"
        f"write = call,reporting,command{',system' if hints else ''}\n"
    )


#: Where each kind of pjsip.conf section goes on FreePBX: the custom files its generated
#: pjsip.conf (or the generated pjsip.<kind>.conf) ``#include``s and never writes itself.
#: ``pjsip_custom.conf`` is included first, outside any section, and takes the publication
#: objects, whose types FreePBX does not generate.
FREEPBX_PJSIP_FILES: Final = {
    "transport": "pjsip.transports_custom.conf",
    "auth": "pjsip.auth_custom.conf",
    "endpoint": "pjsip.endpoint_custom.conf",
    "identify": "pjsip.identify_custom.conf",
    "publish": "pjsip_custom.conf",
}


def freepbx_conf(
    eid: str,
    sip: SipLinkConfig | None,
    *,
    transport: bool = True,
    modules: tuple[str, ...] = (),
    manager: str | None = None,
) -> str:
    """The same configuration as the plain command, laid out for FreePBX 16/17: each part
    under a ``; --- /etc/asterisk/<file> ---`` header naming the file it goes into (FreePBX
    rewrites pjsip.conf, manager.conf and extensions.conf at every ``fwconsole reload``; the
    custom files they include are the administrator's). ``manager`` is
    :func:`manager_conf`'s text, when the node has an AMI link."""
    etc = "/etc/asterisk/"
    parts = [
        "; pbxmesh on FreePBX: each part goes into the file its header names (create it, or add\n"
        "; to it). FreePBX rewrites pjsip.conf, manager.conf and extensions.conf at every\n"
        "; fwconsole reload and only #includes these custom files. See docs/freepbx.md.\n",
        f"; --- {etc}asterisk.conf ---\n"
        "; [options] (FreePBX does not rewrite this file): this server's entity id, the same as\n"
        "; its pbxmesh node's\n"
        f"entityid = {eid}\n",
    ]
    mods = "\n".join(f";   {m}.so" for m in modules)
    parts.append(
        f"; --- {etc}modules.conf ---\n"
        "; nothing to add: FreePBX loads every module (autoload = yes); none of these may be\n"
        "; noload'ed (check: asterisk -rx 'module show like publish_asterisk')\n"
        f"{mods}\n"
    )
    if sip is not None:
        by_file: dict[str, list[list[str]]] = {}
        for kind, lines in _pjsip_sections(sip, transport=transport):
            by_file.setdefault(FREEPBX_PJSIP_FILES[kind], []).append(lines)
        first = True
        for fname in dict.fromkeys(FREEPBX_PJSIP_FILES.values()):
            sections = by_file.get(fname)
            if not sections:
                continue
            head = [f"; --- {etc}{fname} ---"]
            if fname == FREEPBX_PJSIP_FILES["transport"]:
                head += [
                    "; leave this file out (--no-transport) when FreePBX's own PJSIP transport",
                    "; (Asterisk SIP Settings) binds the uri's port: it binds 0.0.0.0 there",
                ]
            if first:
                head += [s.replace("; pjsip.conf:", "; pjsip:", 1) for s in _pjsip_header(sip)]
                first = False
            body = "\n\n".join("\n".join(lines) for lines in sections)
            parts.append("\n".join(head) + "\n" + body + "\n")
    if manager is not None:
        account = "".join(
            line for line in manager.splitlines(keepends=True) if not line.startswith(";")
        )
        parts.append(
            f"; --- {etc}manager_custom.conf ---\n"
            "; the AMI account of pbxmesh (FreePBX's manager.conf has [general] enabled = yes)\n"
            f"{account}"
        )
    return "\n".join(parts)


def _user(uri: str) -> str:
    rest = uri.partition(":")[2]
    user, at, _ = rest.rpartition("@")
    return user if at and user else "pbxmesh"
