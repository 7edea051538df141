"""The Asterisk configuration a SIP link needs: pjsip.conf sections and modules.conf lines.

``pbxmesh asterisk-config`` prints them (and manager.conf's account when the AMI link is
configured too); the real-Asterisk tests configure their Asterisks with the same text, so what
an administrator is told to include is what the tests run.

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

__all__ = ["MODULES", "TEST_MODULES", "manager_conf", "modules_conf", "pjsip_conf"]

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
#: For phones to see remote MWI (SUBSCRIBE message-summary), and for tests of hints.
TEST_MODULES: Final = (
    "res_pjsip_mwi",
    "res_pjsip_mwi_body_generator",
    "pbx_config",
    "func_devstate",
)


def modules_conf(config: SipLinkConfig) -> str:
    mods = MODULES + (AUTH_MODULES if config.secret is not None else ())
    lines = ["; modules.conf, [modules]: what the pbxmesh SIP link needs"]
    lines += [f"load => {m}.so" for m in mods]
    lines.append("; and for phones to get remote MWI: res_pjsip_mwi, res_pjsip_mwi_body_generator")
    return "\n".join(lines) + "\n"


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
