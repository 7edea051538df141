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
# SIPp (Debian's sip-tester) plays the desk phones of the phone tests (tests/harness/phone.py).
command -v sipp >/dev/null || need_apt+=(sip-tester)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ "${PBXMESH_NO_BROWSER:-}" = "" ]; then
    # The lamp page's browser tests drive the system's chromium (headless).
    command -v chromium >/dev/null || need_apt+=(chromium fonts-dejavu-core)
fi
# Real Asterisk builds for the tests marked `asterisk` (not part of pbxmesh): every build tarball
# beside the checkout (../shared/asterisk/asterisk-*.tar.xz), or the ones PBXMESH_ASTERISK_TARBALL
# names (separated by spaces), each unpacked into .asterisk/<build>/; the tests run against each.
ast_tarballs=()
if [ -n "${PBXMESH_ASTERISK_TARBALL:-}" ]; then
    read -r -a ast_tarballs <<<"$PBXMESH_ASTERISK_TARBALL"
else
    for f in ../shared/asterisk/asterisk-*.tar.xz; do
        if [ -f "$f" ]; then ast_tarballs+=("$f"); fi
    done
fi
if [ "${#ast_tarballs[@]}" -gt 0 ]; then
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

# asterisk-22.10.1-debian12-amd64.tar.xz -> .asterisk/22.10.1/; a tree of the older one-build
# layout (.asterisk/usr/) is removed first.
if [ -d .asterisk/usr ]; then rm -rf .asterisk; fi
for tarball in "${ast_tarballs[@]}"; do
    build=$(basename "$tarball" .tar.xz)
    build=${build#asterisk-}
    build=${build%-debian*}
    stamp=".asterisk/$build/.unpacked-$(basename "$tarball")"
    if [ ! -e "$stamp" ]; then
        rm -rf ".asterisk/$build"
        mkdir -p ".asterisk/$build"
        tar -C ".asterisk/$build" -xJf "$tarball"
        touch "$stamp"
    fi
done

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
