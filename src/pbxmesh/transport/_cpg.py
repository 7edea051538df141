"""A small ctypes binding to Corosync 3: libcpg, libquorum, libcmap and libcfg.

Theory of operation
-------------------
``_csabi.py`` holds what every call needs: the ABI (constants and C types, taken from
``corotypes.h``, ``cpg.h``, ``quorum.h``, ``cmap.h`` and ``cfg.h`` of corosync 3.1), the lazy
loading of the libraries, and :func:`check`, the one place where a ``cs_error_t`` becomes an
exception. This module holds the handles and calls built on it.

*Callbacks.* libcpg calls back into Python from inside ``cpg_dispatch``, on the thread that
dispatches (the asyncio loop thread in pbxmesh). ctypes prints and swallows an exception raised
in a callback, so each trampoline catches it, stores it, and :meth:`CpgHandle.dispatch` raises
it after the C call returns. The ``CFUNCTYPE`` objects and the model struct are kept on the
handle for its whole life (libcpg keeps a copy of the function pointers). The ``msg`` pointer
of a delivery points into ``cpg_dispatch``'s stack, so it is copied (``string_at``) at once.

*Dispatch.* Only ``CS_DISPATCH_ALL`` is used: it drains what is queued and never blocks
(``CS_DISPATCH_ONE`` blocks forever on an empty queue). When the daemon dies the fd stays
readable and dispatch returns ``CS_ERR_LIBRARY``: the caller must stop polling the fd.

*Group names* are length-prefixed ``struct cpg_name`` (at most 128 bytes, no NUL); they are
written with ``memmove`` because assigning a ``c_char`` array stops at the first NUL.

*Sending.* ``cpg_mcast_joined`` copies the caller's iovecs into ``iov[64]`` without a bounds
check, so at most 63 are accepted here. Messages above ``cpg_max_atomic_msgsize_get`` would be
fragmented by libcpg with a blocking ``usleep`` retry loop; the transport never sends those.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..errors import TransportError
from ._csabi import (
    CPG_ITERATION_ONE_GROUP,
    CPG_MAX_NAME_LENGTH,
    CPG_MEMBERS_MAX,
    CPG_MODEL_V1,
    CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
    CPG_TYPE_AGREED,
    CS_DISPATCH_ALL,
    CS_ERR_NO_SECTIONS,
    CS_ERR_NOT_EXIST,
    CS_TRACK_CHANGES,
    LIB_NAMES,
    MAX_IOVECS,
    CsError,
    _CfgCallbacks,
    _CfgNodeAddress,
    _ConfchgFn,
    _CpgAddress,
    _CpgIterationDescription,
    _CpgModelV1,
    _CpgName,
    _CpgRingId,
    _DeliverFn,
    _IoVec,
    _QuorumCallbacks,
    _QuorumNotifyFn,
    _TotemConfchgFn,
    check,
    load,
)

__all__ = [
    "CmapHandle",
    "CpgAddress",
    "CpgHandle",
    "NodeInfo",
    "QuorumHandle",
    "group_members",
    "local_node",
]


# -- CPG ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CpgAddress:
    """One ``struct cpg_address``: a process on a node, and why it is in a confchg list."""

    nodeid: int
    pid: int
    reason: int


DeliverCallback = Callable[[int, int, bytes], None]  # nodeid, pid, data
ConfchgCallback = Callable[
    [tuple[CpgAddress, ...], tuple[CpgAddress, ...], tuple[CpgAddress, ...]], None
]  # members, left, joined
TotemCallback = Callable[[int, int, tuple[int, ...]], None]  # ring nodeid, ring seq, node ids


def _addresses(ptr: ctypes._Pointer[_CpgAddress], n: int) -> tuple[CpgAddress, ...]:
    return tuple(CpgAddress(ptr[i].nodeid, ptr[i].pid, ptr[i].reason) for i in range(n))


def _cpg_name(group: str) -> _CpgName:
    raw = group.encode()
    if not raw or len(raw) > CPG_MAX_NAME_LENGTH:
        raise ValueError(f"CPG group name must be 1..{CPG_MAX_NAME_LENGTH} bytes: {group!r}")
    name = _CpgName()
    name.length = len(raw)
    ctypes.memmove(ctypes.addressof(name) + _CpgName.value.offset, raw, len(raw))
    return name


class CpgHandle:
    """One ``cpg_handle_t`` (model V1 with the initial totem confchg), joined to one group.

    The callbacks run inside :meth:`dispatch`; an exception they raise is re-raised by it.
    """

    def __init__(
        self,
        group: str,
        deliver: DeliverCallback,
        confchg: ConfchgCallback,
        totem_confchg: TotemCallback,
    ) -> None:
        self._libs = load()
        self._name = _cpg_name(group)
        self._deliver = deliver
        self._confchg = confchg
        self._totem = totem_confchg
        self._error: BaseException | None = None
        # Kept referenced for the life of the handle: libcpg stores these function pointers.
        self._model = _CpgModelV1(
            model=CPG_MODEL_V1,
            deliver=_DeliverFn(self._c_deliver),
            confchg=_ConfchgFn(self._c_confchg),
            totem_confchg=_TotemConfchgFn(self._c_totem),
            flags=CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF,
        )
        handle = ctypes.c_uint64()
        check(
            self._libs.cpg.cpg_model_initialize(
                ctypes.byref(handle), CPG_MODEL_V1, ctypes.byref(self._model), None
            ),
            "cpg_model_initialize",
        )
        self._handle = handle.value
        self._finalized = False
        try:
            fd = ctypes.c_int()
            check(self._libs.cpg.cpg_fd_get(self._handle, ctypes.byref(fd)), "cpg_fd_get")
            self.fd = fd.value
        except BaseException:
            self.finalize()
            raise

    # Trampolines: never let an exception escape into C. Their signatures are the C ones,
    # hence the many positional arguments.
    def _c_deliver(self, _h: int, _g: object, nodeid: int, pid: int, msg: int, n: int) -> None:
        try:
            self._deliver(nodeid, pid, ctypes.string_at(msg, n))
        except BaseException as exc:  # re-raised by dispatch()
            self._error = self._error or exc

    def _c_confchg(
        self,
        _h: int,
        _g: object,
        members: ctypes._Pointer[_CpgAddress],
        n_members: int,
        left: ctypes._Pointer[_CpgAddress],
        n_left: int,
        joined: ctypes._Pointer[_CpgAddress],
        n_joined: int,
    ) -> None:
        try:
            self._confchg(
                _addresses(members, n_members),
                _addresses(left, n_left),
                _addresses(joined, n_joined),
            )
        except BaseException as exc:
            self._error = self._error or exc

    def _c_totem(
        self, _h: int, ring: _CpgRingId, n: int, nodeids: ctypes._Pointer[ctypes.c_uint32]
    ) -> None:
        try:
            self._totem(ring.nodeid, ring.seq, tuple(nodeids[i] for i in range(n)))
        except BaseException as exc:
            self._error = self._error or exc

    # calls
    def dispatch(self) -> None:
        """Run the callbacks for everything queued (CS_DISPATCH_ALL); never blocks."""
        rc = self._libs.cpg.cpg_dispatch(self._handle, CS_DISPATCH_ALL)
        error, self._error = self._error, None
        if error is not None:
            raise error
        check(rc, "cpg_dispatch")

    def join(self) -> None:
        check(self._libs.cpg.cpg_join(self._handle, ctypes.byref(self._name)), "cpg_join")

    def leave(self) -> None:
        check(self._libs.cpg.cpg_leave(self._handle, ctypes.byref(self._name)), "cpg_leave")

    def mcast(self, *parts: bytes) -> None:
        """Multicast the concatenation of ``parts`` (at most 63) to the group, AGREED order."""
        if not 1 <= len(parts) <= MAX_IOVECS:
            raise ValueError(f"cpg_mcast_joined takes 1..{MAX_IOVECS} iovecs, got {len(parts)}")
        bufs = [ctypes.c_char_p(p) for p in parts]  # no copy; keeps the bytes alive
        iov = (_IoVec * len(parts))()
        for i, (buf, part) in enumerate(zip(bufs, parts, strict=True)):
            iov[i].iov_base = ctypes.cast(buf, ctypes.c_void_p)
            iov[i].iov_len = len(part)
        check(
            self._libs.cpg.cpg_mcast_joined(self._handle, CPG_TYPE_AGREED, iov, len(parts)),
            "cpg_mcast_joined",
        )

    def local_nodeid(self) -> int:
        nodeid = ctypes.c_uint32()
        check(self._libs.cpg.cpg_local_get(self._handle, ctypes.byref(nodeid)), "cpg_local_get")
        return nodeid.value

    def membership(self) -> tuple[CpgAddress, ...]:
        # cpg_membership_get ignores the input count: always pass CPG_MEMBERS_MAX entries.
        arr = (_CpgAddress * CPG_MEMBERS_MAX)()
        n = ctypes.c_int(CPG_MEMBERS_MAX)
        check(
            self._libs.cpg.cpg_membership_get(
                self._handle, ctypes.byref(self._name), arr, ctypes.byref(n)
            ),
            "cpg_membership_get",
        )
        return tuple(CpgAddress(a.nodeid, a.pid, a.reason) for a in arr[: n.value])

    def max_atomic_msgsize(self) -> int:
        size = ctypes.c_uint32()
        check(
            self._libs.cpg.cpg_max_atomic_msgsize_get(self._handle, ctypes.byref(size)),
            "cpg_max_atomic_msgsize_get",
        )
        return size.value

    def finalize(self) -> None:
        """Close the connection; idempotent, never raises (the daemon may be gone)."""
        if not self._finalized:
            self._finalized = True
            self._libs.cpg.cpg_finalize(self._handle)


def group_members(group: str) -> tuple[CpgAddress, ...]:
    """The members of a CPG group, read with ``cpg_iteration`` *without joining it* (a join
    would make every res_corosync member dump its cache, and a leave can wipe states)."""
    libs = load()
    handle = ctypes.c_uint64()
    model = _CpgModelV1(model=CPG_MODEL_V1, flags=0)  # no callbacks: we never dispatch
    check(
        libs.cpg.cpg_model_initialize(
            ctypes.byref(handle), CPG_MODEL_V1, ctypes.byref(model), None
        ),
        "cpg_model_initialize",
    )
    try:
        name = _cpg_name(group)
        it = ctypes.c_uint64()
        check(
            libs.cpg.cpg_iteration_initialize(
                handle.value, CPG_ITERATION_ONE_GROUP, ctypes.byref(name), ctypes.byref(it)
            ),
            "cpg_iteration_initialize",
        )
        out = []
        try:
            desc = _CpgIterationDescription()
            while True:
                rc = libs.cpg.cpg_iteration_next(it.value, ctypes.byref(desc))
                if rc == CS_ERR_NO_SECTIONS:
                    break
                check(rc, "cpg_iteration_next")
                out.append(CpgAddress(desc.nodeid, desc.pid, 0))
        finally:
            libs.cpg.cpg_iteration_finalize(it.value)
        return tuple(out)
    finally:
        libs.cpg.cpg_finalize(handle.value)


# -- CFG: this node's id and ring address --------------------------------------------------------
_AF_INET: Final = 2
_AF_INET6: Final = 10


def _sockaddr_text(raw: bytes) -> str:
    """The numeric host of a ``struct sockaddr_in``/``sockaddr_in6`` (as getnameinfo gives)."""
    import ipaddress

    family = int.from_bytes(raw[:2], "little")
    if family == _AF_INET:
        return str(ipaddress.IPv4Address(raw[4:8]))
    if family == _AF_INET6:
        return str(ipaddress.IPv6Address(raw[8:24]))
    raise CsError(f"corosync_cfg_get_node_addrs (address family {family})", 0)


def local_node() -> tuple[int, str]:
    """This corosync node's id and first ring address, as res_corosync reads them
    (``corosync_cfg_local_get``, ``corosync_cfg_get_node_addrs``)."""
    libs = load()
    if libs.cfg is None:
        raise TransportError(f"{LIB_NAMES['cfg']} not found: apt-get install corosync")
    handle = ctypes.c_uint64()
    callbacks = _CfgCallbacks()
    check(
        libs.cfg.corosync_cfg_initialize(ctypes.byref(handle), ctypes.byref(callbacks)),
        "corosync_cfg_initialize",
    )
    try:
        nodeid = ctypes.c_uint32()
        check(
            libs.cfg.corosync_cfg_local_get(handle.value, ctypes.byref(nodeid)),
            "corosync_cfg_local_get",
        )
        addrs = (_CfgNodeAddress * 8)()
        n = ctypes.c_int(0)
        check(
            libs.cfg.corosync_cfg_get_node_addrs(
                handle.value, nodeid.value, 8, ctypes.byref(n), addrs
            ),
            "corosync_cfg_get_node_addrs",
        )
        if n.value < 1:
            raise CsError("corosync_cfg_get_node_addrs (no address)", 0)
        # (reading .address would stop at the first NUL byte of the sockaddr)
        raw = ctypes.string_at(ctypes.addressof(addrs[0]) + _CfgNodeAddress.address.offset, 28)
        return nodeid.value, _sockaddr_text(raw)
    finally:
        libs.cfg.corosync_cfg_finalize(handle.value)


# -- quorum -------------------------------------------------------------------------------------
QuorumCallback = Callable[[bool, int], None]  # quorate, ring seq


class QuorumHandle:
    """One ``quorum_handle_t`` tracking quorum changes; the callback runs inside dispatch."""

    def __init__(self, notify: QuorumCallback) -> None:
        self._libs = load()
        self._notify = notify
        self._error: BaseException | None = None
        self._callbacks = _QuorumCallbacks(notify=_QuorumNotifyFn(self._c_notify))
        handle, qtype = ctypes.c_uint64(), ctypes.c_uint32()
        check(
            self._libs.quorum.quorum_initialize(
                ctypes.byref(handle), ctypes.byref(self._callbacks), ctypes.byref(qtype)
            ),
            "quorum_initialize",
        )
        self._handle = handle.value
        self._finalized = False
        #: 0 when no quorum provider is configured: then corosync reports always quorate
        self.quorum_type = qtype.value
        try:
            fd = ctypes.c_int()
            check(self._libs.quorum.quorum_fd_get(self._handle, ctypes.byref(fd)), "quorum_fd_get")
            self.fd = fd.value
            check(
                self._libs.quorum.quorum_trackstart(self._handle, CS_TRACK_CHANGES),
                "quorum_trackstart",
            )
        except BaseException:
            self.finalize()
            raise

    def _c_notify(
        self, _h: int, quorate: int, seq: int, _n: int, _ids: ctypes._Pointer[ctypes.c_uint32]
    ) -> None:
        try:
            self._notify(bool(quorate), seq)
        except BaseException as exc:
            self._error = self._error or exc

    def quorate(self) -> bool:
        value = ctypes.c_int()
        check(
            self._libs.quorum.quorum_getquorate(self._handle, ctypes.byref(value)),
            "quorum_getquorate",
        )
        return bool(value.value)

    def dispatch(self) -> None:
        rc = self._libs.quorum.quorum_dispatch(self._handle, CS_DISPATCH_ALL)
        error, self._error = self._error, None
        if error is not None:
            raise error
        check(rc, "quorum_dispatch")

    def finalize(self) -> None:
        if not self._finalized:
            self._finalized = True
            self._libs.quorum.quorum_finalize(self._handle)


# -- cmap: the configured node list -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node of ``nodelist {}``: its configured name and ring0 address ("" when not set)."""

    nodeid: int
    name: str
    address: str


class CmapHandle:
    """A short-lived ``cmap_handle_t`` used to read the node list."""

    def __init__(self) -> None:
        self._libs = load()
        handle = ctypes.c_uint64()
        check(self._libs.cmap.cmap_initialize(ctypes.byref(handle)), "cmap_initialize")
        self._handle = handle.value

    def __enter__(self) -> CmapHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self._libs.cmap.cmap_finalize(self._handle)

    def get_uint32(self, key: str) -> int | None:
        value = ctypes.c_uint32()
        rc = self._libs.cmap.cmap_get_uint32(self._handle, key.encode(), ctypes.byref(value))
        if rc == CS_ERR_NOT_EXIST:
            return None
        check(rc, "cmap_get_uint32")
        return value.value

    def get_string(self, key: str) -> str | None:
        ptr = ctypes.c_void_p()
        rc = self._libs.cmap.cmap_get_string(self._handle, key.encode(), ctypes.byref(ptr))
        if rc == CS_ERR_NOT_EXIST:
            return None
        check(rc, "cmap_get_string")
        if not ptr.value:
            return ""
        try:
            return ctypes.string_at(ptr.value).decode(errors="replace")
        finally:
            self._libs.libc.free(ptr)

    def nodelist(self) -> dict[int, NodeInfo]:
        """``nodelist.node.<i>.{nodeid,name,ring0_addr}`` for every configured node."""
        nodes: dict[int, NodeInfo] = {}
        for i in range(1024):
            nodeid = self.get_uint32(f"nodelist.node.{i}.nodeid")
            if nodeid is None:
                break
            name = self.get_string(f"nodelist.node.{i}.name") or ""
            address = self.get_string(f"nodelist.node.{i}.ring0_addr") or ""
            nodes[nodeid] = NodeInfo(nodeid, name, address)
        return nodes
