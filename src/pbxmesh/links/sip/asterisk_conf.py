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
    "MODULES",
    "PRESENCE_MODULES",
    "asterisk_conf",
    "manager_conf",
    "modules_conf",
    "node_modules",
    "node_modules_conf",
    "pjsip_conf",
]

#: Every link: the dialplan (extensions.conf and its hints) and ``Custom:`` device states.
BASE_MODULES: Final = ("pbx_config", "func_devstate")
#: The AMI link's DeviceStateChange events (the manager itself is part of Asterisk's core).
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
    "res_manager_devicestate": "DeviceStateChange events",
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
        mods += AMI_MODULES if sip is None else ()
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
    name = config.resource
    inbound = _user(config.uri)
    host, port = uri_hostport(config.uri)
    lhost, lport = config.listen
    match = "127.0.0.1" if lhost in ("0.0.0.0", "::", "") else lhost
    proto = config.transport
    params = ";transport=tcp" if proto == "tcp" else ""
    lh = f"[{lhost}]" if ":" in lhost else lhost
    server_uri = f"sip:{name}@{match if lhost in ('0.0.0.0', '::', '') else lh}:{lport}{params}"
    out: list[str] = [
        "; pjsip.conf: the link to pbxmesh (SIP PUBLISH, res_pjsip_publish_asterisk)",
        f"; pbxmesh listens on {lhost}:{lport} ({proto}) and publishes to {config.uri}",
        "",
    ]
    if transport:
        bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        out += [
            f"[{name}-transport-{proto}]   ; leave out if a transport already binds {bind}",
            "type = transport",
            f"protocol = {proto}",
            f"bind = {bind}",
            "",
        ]
    auth = config.username is not None and config.secret is not None
    if auth:
        out += [
            f"[{name}-auth]",
            "type = auth",
            "auth_type = userpass",
            f"username = {config.username}",
            f"password = {config.secret}",
            "",
        ]
    out += [
        f"[{name}]",
        "type = endpoint",
        "context = pbxmesh-none   ; no calls: PUBLISH only",
        "disallow = all",
        "allow = ulaw",
    ]
    if auth:
        out.append(f"auth = {name}-auth   ; Asterisk challenges pbxmesh's PUBLISH")
    out += [
        "",
        f"[{name}]",
        "type = identify",
        f"endpoint = {name}",
        f"match = {match}",
        "",
    ]
    for suffix, event in (("devicestate", "asterisk-devicestate"), ("mwi", "asterisk-mwi")):
        out += [
            f"[{name}-{suffix}]",
            "type = outbound-publish",
            f"server_uri = {server_uri}",
            f"event = {event}",
        ]
        if proto == "tcp":
            out.append(
                f"transport = {name}-transport-tcp   ; a TCP transport (yours, with --no-transport)"
            )
        if auth:
            out.append(f"outbound_auth = {name}-auth")
        out.append("")
    out += [
        f"[{inbound}]   ; named by the user part of [asterisk.sip] uri",
        "type = inbound-publication",
        f"endpoint = {name}",
        f"event_asterisk-devicestate = {name}",
        f"event_asterisk-mwi = {name}",
        "",
        f"[{name}]",
        "type = asterisk-publication",
        f"devicestate_publish = {name}-devicestate",
        f"mailboxstate_publish = {name}-mwi",
        "device_state = yes",
        "mailbox_state = yes",
    ]
    return "\n".join(out) + "\n"


def manager_conf(username: str, secret: str, permit: str = "127.0.0.1") -> str:
    return (
        "; manager.conf: the AMI account of pbxmesh (needs [general] enabled = yes)\n"
        f"[{username}]\n"
        f"secret = {secret}\n"
        "deny = 0.0.0.0/0.0.0.0\n"
        f"permit = {permit}/255.255.255.255\n"
        "read = call,reporting,command\n"
        "write = call,reporting,command\n"
    )


def _user(uri: str) -> str:
    rest = uri.partition(":")[2]
    user, at, _ = rest.rpartition("@")
    return user if at and user else "pbxmesh"
