"""A small ctypes binding to Corosync 3: libcpg, libquorum and libcmap.

Theory of operation
-------------------
No maintained Python binding for Corosync exists, so this module declares the few C entry
points pbxmesh needs. It needs no compiler and no ``-dev`` headers; the ABI below was taken
from ``corotypes.h``, ``cpg.h``, ``quorum.h`` and ``cmap.h`` of corosync 3.1.

*Loading.* Nothing is loaded at import time: importing ``pbxmesh.transport`` must work on a
host without Corosync. :func:`load` opens the shared libraries once, on first use, and turns a
missing library into a :class:`~pbxmesh.errors.TransportError` that says what to install.

*Errors.* Every C call returns a ``cs_error_t``. ``CS_OK`` is **1**, not 0. :func:`check` is the
one place that maps a result to an exception: :class:`CsTryAgain` ("retry later", the caller
owns the back-off), :class:`CsGone` (``CS_ERR_LIBRARY`` / ``CS_ERR_BAD_HANDLE``: the daemon
went away or the handle is finalized; it is also a
:class:`~pbxmesh.errors.TransportClosed`), and :class:`CsError` for everything else. Every
message names the C function and the ``CS_ERR_*`` name.

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
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..errors import TransportClosed, TransportError

__all__ = [
    "CS_ERR_EXIST",
    "CS_ERR_LIBRARY",
    "CS_ERR_TRY_AGAIN",
    "CS_OK",
    "MAX_IOVECS",
    "REASON_JOIN",
    "REASON_LEAVE",
    "REASON_NODEDOWN",
    "REASON_NODEUP",
    "REASON_PROCDOWN",
    "CmapHandle",
    "CpgAddress",
    "CpgHandle",
    "CsError",
    "CsGone",
    "CsTryAgain",
    "NodeInfo",
    "QuorumHandle",
    "check",
    "cs_error_name",
    "group_members",
    "load",
    "local_node",
]

# -- constants (corotypes.h, cpg.h) ------------------------------------------------------------
CS_OK: Final = 1
CS_ERR_LIBRARY: Final = 2
CS_ERR_TRY_AGAIN: Final = 6
CS_ERR_BAD_HANDLE: Final = 9
CS_ERR_ACCESS: Final = 11
CS_ERR_NOT_EXIST: Final = 12
CS_ERR_EXIST: Final = 14

_CS_ERRORS: Final[dict[int, str]] = {
    1: "CS_OK",
    2: "CS_ERR_LIBRARY",
    3: "CS_ERR_VERSION",
    4: "CS_ERR_INIT",
    5: "CS_ERR_TIMEOUT",
    6: "CS_ERR_TRY_AGAIN",
    7: "CS_ERR_INVALID_PARAM",
    8: "CS_ERR_NO_MEMORY",
    9: "CS_ERR_BAD_HANDLE",
    10: "CS_ERR_BUSY",
    11: "CS_ERR_ACCESS",
    12: "CS_ERR_NOT_EXIST",
    13: "CS_ERR_NAME_TOO_LONG",
    14: "CS_ERR_EXIST",
    15: "CS_ERR_NO_SPACE",
    16: "CS_ERR_INTERRUPT",
    17: "CS_ERR_NAME_NOT_FOUND",
    18: "CS_ERR_NO_RESOURCES",
    19: "CS_ERR_NOT_SUPPORTED",
    20: "CS_ERR_BAD_OPERATION",
    21: "CS_ERR_FAILED_OPERATION",
    22: "CS_ERR_MESSAGE_ERROR",
    23: "CS_ERR_QUEUE_FULL",
    24: "CS_ERR_QUEUE_NOT_AVAILABLE",
    25: "CS_ERR_BAD_FLAGS",
    26: "CS_ERR_TOO_BIG",
    27: "CS_ERR_NO_SECTIONS",
    28: "CS_ERR_CONTEXT_NOT_FOUND",
    30: "CS_ERR_TOO_MANY_GROUPS",
    100: "CS_ERR_SECURITY",
}
# Hints for the errors a person is likely to meet.
_CS_HINTS: Final[dict[int, str]] = {
    CS_ERR_LIBRARY: "is corosync running, in this network namespace?",
    CS_ERR_ACCESS: "corosync accepts only root or uids/gids listed in uidgid.d",
    CS_ERR_EXIST: "this process already joined the group (one member per process)",
}

CS_DISPATCH_ALL: Final = 2  # drain what is queued, never block
CS_TRACK_CURRENT: Final = 0x01
CS_TRACK_CHANGES: Final = 0x02

CPG_MODEL_V1: Final = 1
CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF: Final = 0x01
CPG_TYPE_AGREED: Final = 2  # FIFO is the same; the daemon always uses TOTEM_AGREED
CPG_MAX_NAME_LENGTH: Final = 128
CPG_MEMBERS_MAX: Final = 128
MAX_IOVECS: Final = 63

REASON_JOIN: Final = 1
REASON_LEAVE: Final = 2
REASON_NODEDOWN: Final = 3
REASON_NODEUP: Final = 4
REASON_PROCDOWN: Final = 5

_LIB_NAMES: Final = {
    "cpg": "libcpg.so.4",
    "quorum": "libquorum.so.5",
    "cmap": "libcmap.so.4",
    "cfg": "libcfg.so.7",
}
CS_ERR_NO_SECTIONS: Final = 27
CPG_ITERATION_ONE_GROUP: Final = 2


# -- errors: the one place where a cs_error_t becomes an exception -----------------------------
def cs_error_name(code: int) -> str:
    """``CS_ERR_TRY_AGAIN`` for 6, ``cs_error_t(99)`` for an unknown value."""
    return _CS_ERRORS.get(code, f"cs_error_t({code})")


class CsError(TransportError):
    """A Corosync library call failed; ``code`` is the ``cs_error_t``, ``op`` the C function."""

    def __init__(self, op: str, code: int) -> None:
        self.op = op
        self.code = code
        hint = _CS_HINTS.get(code)
        text = f"corosync {op}() failed: {cs_error_name(code)} ({code})"
        super().__init__(f"{text}; {hint}" if hint else text)


class CsTryAgain(CsError):
    """``CS_ERR_TRY_AGAIN``: the daemon is busy (send queue full, membership sync); retry."""


class CsGone(CsError, TransportClosed):
    """``CS_ERR_LIBRARY`` or ``CS_ERR_BAD_HANDLE``: the daemon went away; reconnect."""


def check(code: int, op: str) -> None:
    """Raise the exception for ``code`` unless it is ``CS_OK``."""
    if code == CS_OK:
        return
    if code == CS_ERR_TRY_AGAIN:
        raise CsTryAgain(op, code)
    if code in (CS_ERR_LIBRARY, CS_ERR_BAD_HANDLE):
        raise CsGone(op, code)
    raise CsError(op, code)


# -- C types ------------------------------------------------------------------------------------
class _CpgName(ctypes.Structure):
    _fields_ = (("length", ctypes.c_uint32), ("value", ctypes.c_char * CPG_MAX_NAME_LENGTH))


class _CpgAddress(ctypes.Structure):
    _fields_ = (("nodeid", ctypes.c_uint32), ("pid", ctypes.c_uint32), ("reason", ctypes.c_uint32))


class _CpgRingId(ctypes.Structure):
    _fields_ = (("nodeid", ctypes.c_uint32), ("seq", ctypes.c_uint64))


class _IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


_AddrPtr = ctypes.POINTER(_CpgAddress)
_DeliverFn = ctypes.CFUNCTYPE(
    None,
    ctypes.c_uint64,
    ctypes.POINTER(_CpgName),
    ctypes.c_uint32,
    ctypes.c_uint32,
    ctypes.c_void_p,
    ctypes.c_size_t,
)
_ConfchgFn = ctypes.CFUNCTYPE(
    None,
    ctypes.c_uint64,
    ctypes.POINTER(_CpgName),
    _AddrPtr,
    ctypes.c_size_t,
    _AddrPtr,
    ctypes.c_size_t,
    _AddrPtr,
    ctypes.c_size_t,
)
# struct cpg_ring_id is passed BY VALUE (works with ctypes on x86-64 and aarch64).
_TotemConfchgFn = ctypes.CFUNCTYPE(
    None, ctypes.c_uint64, _CpgRingId, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)
)
_QuorumNotifyFn = ctypes.CFUNCTYPE(
    None,
    ctypes.c_uint64,
    ctypes.c_uint32,
    ctypes.c_uint64,
    ctypes.c_uint32,
    ctypes.POINTER(ctypes.c_uint32),
)


class _CpgModelV1(ctypes.Structure):
    _fields_ = (
        ("model", ctypes.c_int),
        ("deliver", _DeliverFn),
        ("confchg", _ConfchgFn),
        ("totem_confchg", _TotemConfchgFn),
        ("flags", ctypes.c_uint),
    )


class _QuorumCallbacks(ctypes.Structure):
    _fields_ = (("notify", _QuorumNotifyFn),)


class _CpgIterationDescription(ctypes.Structure):
    _fields_ = (("group", _CpgName), ("nodeid", ctypes.c_uint32), ("pid", ctypes.c_uint32))


class _CfgCallbacks(ctypes.Structure):
    _fields_ = (("shutdown", ctypes.c_void_p),)  # corosync_cfg_shutdown_callback_t (unused)


class _CfgNodeAddress(ctypes.Structure):
    # corosync_cfg_node_address_t: int address_length; char address[sizeof(sockaddr_in6)]
    _fields_ = (("address_length", ctypes.c_int), ("address", ctypes.c_char * 28))


# -- loading ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Libs:
    cpg: ctypes.CDLL
    quorum: ctypes.CDLL
    cmap: ctypes.CDLL
    libc: ctypes.CDLL
    cfg: ctypes.CDLL | None  # libcfg: only the ring link needs it (local node address)


def _open(key: str) -> ctypes.CDLL:
    name = _LIB_NAMES[key]
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise TransportError(f"{name} not found: apt-get install corosync ({exc})") from exc


def _declare(libs: _Libs) -> None:
    u64, u32, vp = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p
    p_u64, p_u32, p_int = ctypes.POINTER(u64), ctypes.POINTER(u32), ctypes.POINTER(ctypes.c_int)
    p_name = ctypes.POINTER(_CpgName)
    sigs: dict[ctypes.CDLL, dict[str, list[type]]] = {
        libs.cpg: {
            "cpg_model_initialize": [p_u64, ctypes.c_int, ctypes.POINTER(_CpgModelV1), vp],
            "cpg_finalize": [u64],
            "cpg_fd_get": [u64, p_int],
            "cpg_dispatch": [u64, ctypes.c_int],
            "cpg_join": [u64, p_name],
            "cpg_leave": [u64, p_name],
            "cpg_mcast_joined": [u64, ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_uint],
            "cpg_membership_get": [u64, p_name, _AddrPtr, p_int],
            "cpg_local_get": [u64, p_u32],
            "cpg_max_atomic_msgsize_get": [u64, p_u32],
            "cpg_iteration_initialize": [u64, ctypes.c_int, p_name, p_u64],
            "cpg_iteration_next": [u64, ctypes.POINTER(_CpgIterationDescription)],
            "cpg_iteration_finalize": [u64],
        },
        libs.quorum: {
            "quorum_initialize": [p_u64, ctypes.POINTER(_QuorumCallbacks), p_u32],
            "quorum_finalize": [u64],
            "quorum_fd_get": [u64, p_int],
            "quorum_dispatch": [u64, ctypes.c_int],
            "quorum_getquorate": [u64, p_int],
            "quorum_trackstart": [u64, ctypes.c_uint],
        },
        libs.cmap: {
            "cmap_initialize": [p_u64],
            "cmap_finalize": [u64],
            "cmap_get_uint32": [u64, ctypes.c_char_p, p_u32],
            "cmap_get_string": [u64, ctypes.c_char_p, ctypes.POINTER(vp)],
        },
    }
    if libs.cfg is not None:
        sigs[libs.cfg] = {
            "corosync_cfg_initialize": [p_u64, ctypes.POINTER(_CfgCallbacks)],
            "corosync_cfg_finalize": [u64],
            "corosync_cfg_local_get": [u64, p_u32],
            "corosync_cfg_get_node_addrs": [
                u64,
                ctypes.c_uint,
                ctypes.c_size_t,
                p_int,
                ctypes.POINTER(_CfgNodeAddress),
            ],
        }
    for lib, funcs in sigs.items():
        for fname, argtypes in funcs.items():
            fn = getattr(lib, fname)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
    libs.libc.free.argtypes = [vp]
    libs.libc.free.restype = None


@functools.cache
def load() -> _Libs:
    """Open libcpg, libquorum and libcmap once; raise TransportError if one is missing."""
    libc = ctypes.CDLL(None)
    try:
        cfg: ctypes.CDLL | None = _open("cfg")
    except TransportError:
        cfg = None
    libs = _Libs(cpg=_open("cpg"), quorum=_open("quorum"), cmap=_open("cmap"), libc=libc, cfg=cfg)
    _declare(libs)
    return libs


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
        raise TransportError(f"{_LIB_NAMES['cfg']} not found: apt-get install corosync")
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
