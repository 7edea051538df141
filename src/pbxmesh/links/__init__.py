"""Links to Asterisk: each carries this server's own states into the cluster and the rest of
the cluster's states into its Asterisk, behind one interface (``base.py``). ``ami/`` is the
first; a new link is a new subpackage here that passes ``tests/link_contract.py``."""

from .base import Hint, Interest, Link, LinkPort, LinkStatus

__all__ = ["Hint", "Interest", "Link", "LinkPort", "LinkStatus"]
