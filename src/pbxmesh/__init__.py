"""pbxmesh: Asterisk device states and MWI shared across many PBX servers."""

from .errors import PbxmeshError, ProtocolError
from .states import DeviceState, ExtensionState, aggregate, parse_state

__version__ = "0.1.0"

__all__ = [
    "DeviceState",
    "ExtensionState",
    "PbxmeshError",
    "ProtocolError",
    "__version__",
    "aggregate",
    "parse_state",
]
