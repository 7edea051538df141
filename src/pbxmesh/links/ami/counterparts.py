"""How the AMI link names the local ``Custom:`` device that mirrors the other servers' state.

Pure functions, shared by the link, the CLI (``pbxmesh hints``), the demo and the tests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Final

from ...store import MAX_DEVICE_BYTES

__all__ = ["DEFAULT_TEMPLATE", "MAX_DEVICE_NAME", "UNSAFE", "counterpart_name", "hint_lines"]

DEFAULT_TEMPLATE: Final = "Custom:remote-{device}"
#: Longest device name Asterisk publishes (ast_devstate_changed's 80-byte buffer).
MAX_DEVICE_NAME: Final = MAX_DEVICE_BYTES
#: Characters a counterpart name may not hold (replaced by "-").
UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.@+#*~=-]")


def counterpart_name(device: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The local ``Custom:`` device that mirrors the cluster value of ``device``.

    Characters other than letters, digits and ``_ . @ + # * ~ = -`` become ``-`` (``/`` would
    make Asterisk read ``Custom:remote-PJSIP/100`` as a channel technology, ``:`` ``&`` ``,``
    ``(`` ``)`` would break hints or the ``DEVICE_STATE()`` argument). So
    ``PJSIP/100`` → ``Custom:remote-PJSIP-100``, ``Custom:mystate`` →
    ``Custom:remote-Custom-mystate``. Distinct devices can collide (``PJSIP/100`` and
    ``PJSIP-100``); the link logs it. Names are cut to Asterisk's 79 characters by keeping a
    prefix and appending ``~`` plus 8 hex digits of the device's SHA-1, so they stay unique.
    """
    safe = UNSAFE.sub("-", device)
    name = template.replace("{device}", safe)
    if len(name) <= MAX_DEVICE_NAME:
        return name
    digest = hashlib.sha1(device.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    room = MAX_DEVICE_NAME - (len(template) - len("{device}")) - 9
    return template.replace("{device}", f"{safe[:room]}~{digest}")


def hint_lines(
    devices: Mapping[str, str], context: str = "default", template: str = DEFAULT_TEMPLATE
) -> list[str]:
    """extensions.conf lines giving each extension a hint on its device *and* counterpart.

    ``hint_lines({"1234": "Custom:mystate"}, "devstate_test")`` →
    ``["[devstate_test]", "exten => 1234,hint,Custom:mystate&Custom:remote-Custom-mystate"]``.
    """
    lines = [f"[{context}]"]
    for exten, device in devices.items():
        lines.append(f"exten => {exten},hint,{device}&{counterpart_name(device, template)}")
    return lines
