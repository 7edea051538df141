"""The Corosync 3 libraries as ctypes sees them: constants, C types, loading, errors.

Theory of operation
-------------------
No maintained Python binding for Corosync exists, so this module declares the few C entry
points pbxmesh needs (``_cpg.py`` calls them). It needs no compiler and no ``-dev`` headers;
the ABI below was taken from ``corotypes.h``, ``cpg.h``, ``quorum.h``, ``cmap.h`` and ``cfg.h``
of corosync 3.1.

*Loading.* Nothing is loaded at import time: importing ``pbxmesh.transport`` must work on a
host without Corosync. :func:`load` opens the shared libraries once, on first use, and turns a
missing library into a :class:`~pbxmesh.errors.TransportError` that says what to install.

*Errors.* Every C call returns a ``cs_error_t``. ``CS_OK`` is **1**, not 0. :func:`check` is the
one place that maps a result to an exception: :class:`CsTryAgain` ("retry later", the caller
owns the back-off), :class:`CsGone` (``CS_ERR_LIBRARY`` / ``CS_ERR_BAD_HANDLE``: the daemon
went away or the handle is finalized; it is also a
:class:`~pbxmesh.errors.TransportClosed`), and :class:`CsError` for everything else. Every
message names the C function and the ``CS_ERR_*`` name.

The calls themselves (CPG, quorum, cmap, cfg) are in ``_cpg.py``.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Final

from ..errors import TransportClosed, TransportError

__all__ = [
    "CPG_ITERATION_ONE_GROUP",
    "CPG_MAX_NAME_LENGTH",
    "CPG_MEMBERS_MAX",
    "CPG_MODEL_V1",
    "CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF",
    "CPG_TYPE_AGREED",
    "CS_DISPATCH_ALL",
    "CS_ERR_EXIST",
    "CS_ERR_LIBRARY",
    "CS_ERR_NOT_EXIST",
    "CS_ERR_NO_SECTIONS",
    "CS_ERR_TRY_AGAIN",
    "CS_OK",
    "CS_TRACK_CHANGES",
    "LIB_NAMES",
    "MAX_IOVECS",
    "REASON_JOIN",
    "REASON_LEAVE",
    "REASON_NODEDOWN",
    "REASON_NODEUP",
    "REASON_PROCDOWN",
    "CsError",
    "CsGone",
    "CsTryAgain",
    "Libs",
    "check",
    "cs_error_name",
    "load",
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

LIB_NAMES: Final = {
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
class Libs:
    cpg: ctypes.CDLL
    quorum: ctypes.CDLL
    cmap: ctypes.CDLL
    libc: ctypes.CDLL
    cfg: ctypes.CDLL | None  # libcfg: only the ring link needs it (local node address)


def _open(key: str) -> ctypes.CDLL:
    name = LIB_NAMES[key]
    try:
        return ctypes.CDLL(name)
    except OSError as exc:
        raise TransportError(f"{name} not found: apt-get install corosync ({exc})") from exc


def _declare(libs: Libs) -> None:
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
def load() -> Libs:
    """Open libcpg, libquorum and libcmap once; raise TransportError if one is missing."""
    libc = ctypes.CDLL(None)
    try:
        cfg: ctypes.CDLL | None = _open("cfg")
    except TransportError:
        cfg = None
    libs = Libs(cpg=_open("cpg"), quorum=_open("quorum"), cmap=_open("cmap"), libc=libc, cfg=cfg)
    _declare(libs)
    return libs
