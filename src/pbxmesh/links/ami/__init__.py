"""The link to Asterisk over AMI: sans-IO codec, asyncio client, the link itself, and the
naming of the ``Custom:`` counterparts it writes."""

from .client import AmiClient, AmiConfig
from .codec import (
    CLOSED,
    NEED_DATA,
    Action,
    AmiCodec,
    Banner,
    Event,
    ListAssembler,
    ListResponse,
    Response,
    Role,
)
from .counterparts import DEFAULT_TEMPLATE, counterpart_name, hint_lines
from .link import AmiLink, AmiLinkConfig

__all__ = [
    "CLOSED",
    "DEFAULT_TEMPLATE",
    "NEED_DATA",
    "Action",
    "AmiClient",
    "AmiCodec",
    "AmiConfig",
    "AmiLink",
    "AmiLinkConfig",
    "Banner",
    "Event",
    "ListAssembler",
    "ListResponse",
    "Response",
    "Role",
    "counterpart_name",
    "hint_lines",
]
