#!/usr/bin/env bash
# The Debian package under a real systemd, on a clean Debian 12: what scripts/deb-check.sh
# cannot show where systemd is not running (the unit's User=, sandbox and system-call filter,
# ExecReload, the maintainer scripts' systemctl paths).
#
# debootstrap makes a minimal Debian 12 with systemd and corosync in a temporary directory;
# the package is installed there with `apt-get install ./pbxmesh_*.deb` (apt fetches its
# dependencies from Debian's archive), then the container boots with systemd-nspawn on a
# private network (loopback only). An AMI simulator stands where the shipped configuration
# expects Asterisk. It checks that `systemctl enable --now pbxmesh` runs the daemon as pbxmesh,
# with no capabilities, no new privileges and a seccomp filter; that `pbxmesh status`, `members`
# and a publish that goes round corosync's CPG and back work; that `systemctl reload` reloads
# and `systemctl stop` leaves the cluster; that reinstalling the package (the upgrade path)
# restarts it; and that a purge leaves no file and no enablement behind.
#
# As root; needs debootstrap and systemd-container (installed if missing) and Debian's archive.
# About a minute or two. The last line is "deb systemd check: PASS" or "... FAIL: <why>".
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d -p /var/tmp pbxmesh-deb-systemd.XXXXXX)
root="$work/root"
boot_pid=""

step() { echo "deb systemd check: $*"; }
failure=""
fail() {
    failure="$*"
    echo "deb systemd check: error: $failure"
    exit 1
}
leader() { pgrep -P "$boot_pid" | sed -n 1p; }
booted() { [ -n "$(leader)" ]; }
# A command inside the booted container (all its namespaces).
in_ct() { nsenter -t "$(leader)" -a "$@"; }
# A command in the container's tree before it boots (no systemd running there).
offline() {
    systemd-nspawn -q --register=no --keep-unit --console=pipe -D "$root" "$@" </dev/null
}

cleanup() {
    local rc=$?
    set +e
    if [ -n "$boot_pid" ] && kill -0 "$boot_pid" 2>/dev/null; then
        if [ "$rc" -ne 0 ]; then
            echo "--- journal of pbxmesh.service"
            in_ct journalctl -u pbxmesh --no-pager -n 40
        fi
        in_ct systemctl poweroff >/dev/null 2>&1
        for _ in $(seq 150); do kill -0 "$boot_pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$boot_pid" 2>/dev/null
        wait "$boot_pid" 2>/dev/null
    fi
    if [ "$rc" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -s "$log" ] && { echo "--- $(basename "$log")"; tail -n 20 "$log"; }
        done
    fi
    rm -rf "$work"
    # The verdict comes last, after the logs.
    [ "$rc" -eq 0 ] || echo "deb systemd check: FAIL: ${failure:-exit status $rc}"
    exit "$rc"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# Wait until "$@" succeeds, for at most $deadline seconds.
wait_for() {
    local deadline=$1 what=$2
    shift 2
    local end=$((SECONDS + deadline))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || fail "$what not after ${deadline} s"
        sleep 0.3
    done
}

[ "$(id -u)" -eq 0 ] || fail "run as root"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

deb=$(bash packaging/build-deb.sh 2>"$work/build.log" | tail -n 1) || fail "build-deb.sh failed"
step "built $deb"
# The Debian archive this machine's apt uses.
mirror=$(awk '$1 == "URIs:" { print $2; exit }' /etc/apt/sources.list.d/debian.sources \
    2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
    /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || fail "no Debian archive found in apt's sources"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,corosync \
    bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || fail "debootstrap failed"
step "a minimal Debian 12 with systemd and corosync in $root"

cp "$deb" "$root/root/"
# The AMI simulator, where the shipped configuration expects Asterisk.
cat >"$root/etc/systemd/system/pbxsim.service" <<'EOF'
[Unit]
Description=AMI simulator standing in for Asterisk
Before=pbxmesh.service
[Service]
DynamicUser=yes
ExecStart=/usr/bin/pbxmesh sim --listen 127.0.0.1:5038 --username pbxmesh --secret change-me
[Install]
WantedBy=multi-user.target
EOF
offline sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y /root/$(basename "$deb")" >"$work/install.log" 2>&1 \
    || fail "apt-get install ./$(basename "$deb") in the container failed"
offline systemctl enable pbxsim.service pbxmesh.service >"$work/enable.log" 2>&1 \
    || fail "systemctl enable failed"
step "installed with apt-get and enabled (as systemctl enable --now would after boot)"

systemd-nspawn -q --register=no --keep-unit --console=passive --private-network -b \
    -D "$root" >"$work/boot.log" 2>&1 </dev/null &
boot_pid=$!
wait_for 30 "the container's systemd" booted
wait_for 60 "pbxmesh.service active" in_ct systemctl is-active --quiet pbxmesh.service
wait_for 30 "pbxmesh status answering" in_ct pbxmesh status
main=$(in_ct systemctl show -p MainPID --value pbxmesh.service)
[ "$(in_ct stat -c %U "/proc/$main")" = pbxmesh ] || fail "the daemon does not run as pbxmesh"
in_ct grep -q '^CapEff:[[:space:]]*0000000000000000$' "/proc/$main/status" \
    || fail "the daemon has capabilities"
in_ct grep -q '^NoNewPrivs:[[:space:]]*1$' "/proc/$main/status" || fail "NoNewPrivs is off"
in_ct grep -q '^Seccomp:[[:space:]]*2$' "/proc/$main/status" || fail "no system-call filter"
in_ct pbxmesh status | sed 's/^/    /'
members=$(in_ct pbxmesh members) || fail "pbxmesh members failed"
grep -q '(this node) .* Yes ' <<<"$members" || fail "members does not list this node"
in_ct pbxmesh publish device_state Custom:deb1 INUSE >/dev/null || fail "publish failed"
# The frame goes out through corosync and comes back through libcpg's delivery callback.
wait_for 10 "the published state in devices" sh -c \
    "nsenter -t $(leader) -a pbxmesh devices | grep -q '^Custom:deb1 *INUSE'"
step "pbxmesh runs as pbxmesh (no capabilities, seccomp), answers, and corosync carries its frames"

in_ct systemctl reload pbxmesh.service || fail "systemctl reload failed"
wait_for 10 "the reload" sh -c "nsenter -t $(leader) -a journalctl -u pbxmesh | grep -q 'reload done'"
in_ct apt-get install -y --reinstall "/root/$(basename "$deb")" >"$work/reinstall.log" 2>&1 \
    || fail "reinstalling the package failed"
wait_for 30 "pbxmesh back after the upgrade" in_ct pbxmesh status
[ "$(in_ct systemctl show -p MainPID --value pbxmesh.service)" != "$main" ] \
    || fail "the upgrade did not restart the daemon"
step "systemctl reload reloaded; the upgrade restarted it"

in_ct systemctl stop pbxmesh.service
in_ct journalctl -u pbxmesh --no-pager >"$work/journal.log" 2>&1
grep -q "leaving the cluster" "$work/journal.log" || fail "stop did not leave the cluster"
! in_ct systemctl is-failed --quiet pbxmesh.service || fail "the unit failed on stop"
in_ct apt-get purge -y pbxmesh >"$work/purge.log" 2>&1 || fail "apt-get purge failed"
for path in /opt/pbxmesh /usr/bin/pbxmesh /etc/pbxmesh /var/lib/pbxmesh \
    /lib/systemd/system/pbxmesh.service /etc/corosync/uidgid.d/pbxmesh \
    /etc/systemd/system/multi-user.target.wants/pbxmesh.service; do
    ! in_ct test -e "$path" -o -L "$path" || fail "purge left $path"
done
step "stop left the cluster; purge removed the files and the enablement"
echo "deb systemd check: PASS"
