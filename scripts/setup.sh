#!/usr/bin/env bash
# Install what pbxmesh and its tests need on a fresh Debian machine (run as root), then create
# .venv with pbxmesh installed from this checkout. Safe to run again; quick when done already.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v corosync >/dev/null || need_apt+=(corosync)
command -v nats-server >/dev/null || need_apt+=(nats-server)
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ "${PBXMESH_NO_BROWSER:-}" = "" ]; then
    # The lamp page's browser tests drive the system's chromium (headless).
    command -v chromium >/dev/null || need_apt+=(chromium fonts-dejavu-core)
fi
# A real Asterisk for the tests marked `asterisk` (it is not part of pbxmesh): unpacked into
# .asterisk/ from a build tarball beside the checkout, or the one PBXMESH_ASTERISK_TARBALL names.
ast_tarball="${PBXMESH_ASTERISK_TARBALL:-}"
if [ -z "$ast_tarball" ]; then
    for f in ../shared/asterisk/asterisk-*.tar.xz; do
        if [ -f "$f" ]; then ast_tarball="$f"; fi
    done
fi
if [ -n "$ast_tarball" ]; then
    command -v xz >/dev/null || need_apt+=(xz-utils)
    command -v nsenter >/dev/null || need_apt+=(util-linux)
    for lib in libjansson4 libedit2 libsqlite3-0 libssl3 libuuid1 libxml2 libxslt1.1; do
        dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "ok installed" || need_apt+=("$lib")
    done
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing ${need_apt[*]}; run as root or: apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
# The Debian corosync package starts a daemon on 127.0.0.1 with real-time priority; pbxmesh's
# demo and tests start their own, so stop the packaged one if it was started here.
if command -v systemctl >/dev/null && systemctl is-active --quiet corosync 2>/dev/null; then
    systemctl stop corosync || true
fi

if [ -n "$ast_tarball" ]; then
    stamp=".asterisk/.unpacked-$(basename "$ast_tarball")"
    if [ ! -e "$stamp" ]; then
        rm -rf .asterisk
        mkdir -p .asterisk
        tar -C .asterisk -xJf "$ast_tarball"
        touch "$stamp"
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
extras="${PBXMESH_EXTRAS:-test,nats}"
marker=".venv/.installed-${extras//,/-}"
if ! .venv/bin/python -c 'import pbxmesh' 2>/dev/null || [ pyproject.toml -nt "$marker" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[${extras}]"
    touch "$marker"
fi
