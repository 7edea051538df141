"""Every link's configuration, built in one place from the validated file.

``config.py`` validates each key once, with file:line; this module only maps the sections of
:class:`~pbxmesh.config.Config` onto what each link takes (``[asterisk]`` → the AMI link,
``[asterisk.sip]`` → the SIP PUBLISH link, ``[asterisk.ring]`` → the res_corosync bridge), so
the daemon, the CLI and the tests build the same links from the same file. The link packages
are imported lazily, as the daemon always did: a node without a ring does not load libcpg.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import AsteriskConfig, RingSection
    from .links.ami import AmiConfig, AmiLinkConfig
    from .links.base import Link
    from .links.ring import RingLinkConfig
    from .links.sip.config import SipLinkConfig

__all__ = ["ami_link_config", "asterisk_links", "ring_link", "ring_link_config", "sip_link_config"]

#: The file, in the state directory, where the SIP link keeps what Asterisk holds from it.
SIP_STATE_FILE = "sip-published.json"


def ami_link_config(ast: AsteriskConfig) -> tuple[AmiConfig, AmiLinkConfig]:
    """The AMI client's and the AMI link's configuration from ``[asterisk]``."""
    from .links.ami import AmiConfig, AmiLinkConfig
    from .links.ami.hints import HintsConfig

    if ast.ami is None:
        raise ConfigError("no AMI link configured in [asterisk] (give ami, username and secret)")
    host, port = ast.ami
    # Beside a SIP link, AMI shares no device state or MWI (DeviceStateChange would then carry
    # Asterisk's aggregate, remote states included, back as local): it shares presence, serves
    # `pbxmesh hints` and keeps [asterisk.hints].
    shared = ast.sip is None
    return (
        AmiConfig(host=host, port=port, username=ast.username, secret=ast.secret),
        AmiLinkConfig(
            include=ast.include if shared else (),
            exclude=ast.exclude,
            template=ast.remote_template,
            share_mwi=ast.mwi and shared,
            mwi_include=ast.include,
            mwi_exclude=ast.exclude,
            share_presence=ast.presence,
            presence_include=ast.include,
            presence_exclude=ast.exclude,
            down_grace=ast.down_grace,
            hints=(
                HintsConfig(context=ast.hints.context, device=ast.hints.device)
                if ast.hints is not None
                else None
            ),
        ),
    )


def sip_link_config(ast: AsteriskConfig, *, state_file: Path | None = None) -> SipLinkConfig:
    """The SIP PUBLISH link's configuration from ``[asterisk]`` and ``[asterisk.sip]``."""
    from .links.sip.config import SipLinkConfig
    from .links.sip.headers import uri_user

    sip = ast.sip
    if sip is None:
        raise ConfigError("no [asterisk.sip] section")
    return SipLinkConfig(
        listen=sip.listen,
        uri=sip.uri,
        resource=uri_user(sip.uri) or "pbxmesh",
        username=sip.username,
        secret=sip.secret,
        transport="tcp" if sip.transport == "tcp" else "udp",
        include=ast.include,
        exclude=ast.exclude,
        share_mwi=ast.mwi,
        mwi_include=ast.include,
        mwi_exclude=ast.exclude,
        state_file=state_file,
        down_grace=ast.down_grace,
    )


def ring_link_config(ring: RingSection) -> RingLinkConfig:
    """The res_corosync bridge's configuration from ``[asterisk.ring]``."""
    from .links.ring import RingLinkConfig

    return RingLinkConfig(
        group=ring.group,
        include=ring.include,
        exclude=ring.exclude,
        mwi=ring.mwi,
        down_grace=ring.down_grace,
    )


def asterisk_links(ast: AsteriskConfig | None, state_dir: Path | None = None) -> list[Link]:
    """The links ``[asterisk]`` configures: the SIP PUBLISH link if ``[asterisk.sip]`` is
    there, the AMI link if its keys are (the ring bridge aside: :func:`ring_link`)."""
    if ast is None:
        return []
    links: list[Link] = []
    if ast.sip is not None:
        from .links.sip.link import SipLink

        held = state_dir / SIP_STATE_FILE if state_dir is not None else None
        links.append(SipLink(sip_link_config(ast, state_file=held)))
    if ast.ami is not None:
        from .links.ami import AmiLink

        links.append(AmiLink(*ami_link_config(ast)))
    return links


def ring_link(ring: RingSection) -> Link:
    """The ``[asterisk.ring]`` bridge."""
    from .links.ring import RingLink

    return RingLink(ring_link_config(ring))
