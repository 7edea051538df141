#!/usr/bin/env bash
# CI: the Debian package end to end, as root on a Debian 12 machine without systemd running.
#
# Builds dist/pbxmesh_<version>_<arch>.deb (packaging/build-deb.sh), installs it with apt-get,
# checks its files, user and modes, `pbxmesh --help` and `check-config` on the shipped example;
# then, in a private network namespace, starts a real corosync (private /run, knet on loopback)
# and an AMI simulator where the shipped configuration expects Asterisk, and runs the unit's
# ExecStart line, read from the installed unit, as the unit's User (setpriv stands in for
# systemd: no capabilities, no new privileges, the unit's UMask). It checks that `pbxmesh
# status` and `members` answer over the control API, that corosync lists the daemon in its
# CPG group (so the uidgid.d file lets the unprivileged user in), that SIGHUP (ExecReload)
# reloads and SIGTERM stops it cleanly. Then it reinstalls the package over itself (the
# upgrade path keeps an edited configuration), removes it (the configuration stays), purges it
# and checks that nothing but the system user is left.
#
# Safe to run again: a pbxmesh package left installed by an earlier run is purged first, and
# every process, namespace and file it starts or makes is removed on exit, failure included.
# The last line is "deb check: PASS" or "deb check: FAIL: <why>".
# shellcheck disable=SC2015  # "[ a ] && [ b ] || fail" is meant: fail when either test is false
set -euo pipefail
cd "$(dirname "$0")/.."

UNIT=/lib/systemd/system/pbxmesh.service
CONF=/etc/pbxmesh/pbxmesh.toml
ns="deb$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"
work=$(mktemp -d -t pbxmesh-deb-check.XXXXXX)
corosync_pid="" sim_pid="" node_pid="" ns_made=""

step() { echo "deb check: $*"; }
failure=""
fail() {
    failure="$*"
    echo "deb check: error: $failure"
    exit 1
}

cleanup() {
    local rc=$?
    set +e
    for pid in $node_pid $sim_pid; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    if [ -n "$corosync_pid" ] && kill -TERM "$corosync_pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$corosync_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$corosync_pid" 2>/dev/null
        wait "$corosync_pid" 2>/dev/null
    fi
    if [ -n "$corosync_pid" ]; then # libqb's rings and blackbox of that corosync
        rm -rf /dev/shm/qb-"$corosync_pid"-* /dev/shm/qb-*-"$corosync_pid"-*
    fi
    [ -n "$ns_made" ] && ip netns del "$ns" 2>/dev/null
    if [ "$rc" -ne 0 ]; then
        for log in "$work"/*.log; do
            [ -s "$log" ] && { echo "--- $(basename "$log")"; tail -n 30 "$log"; }
        done
        dpkg -s pbxmesh >/dev/null 2>&1 && apt-get purge -y -qq pbxmesh >/dev/null 2>&1
    fi
    rm -rf "$work"
    # The verdict comes last, after the logs.
    [ "$rc" -eq 0 ] || echo "deb check: FAIL: ${failure:-exit status $rc}"
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
        sleep 0.2
    done
}

[ "$(id -u)" -eq 0 ] || fail "run as root (it installs a package and makes a network namespace)"
need=()
command -v corosync >/dev/null || need+=(corosync)
command -v ip >/dev/null || need+=(iproute2)
command -v setpriv >/dev/null || need+=(util-linux)
/usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if dpkg -s pbxmesh >/dev/null 2>&1; then
    step "purging the pbxmesh package an earlier run left installed"
    apt-get purge -y -qq pbxmesh >/dev/null
fi

# 1. Build and install.
deb=$(bash packaging/build-deb.sh 2>"$work/build.log" | tail -n 1) || fail "build-deb.sh failed"
[ -f "$deb" ] || fail "build-deb.sh did not make a package"
step "built $deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y "./$deb" >"$work/install.log" 2>&1 \
    || fail "apt-get install ./$deb failed"
step "installed $deb"

# 2. What the package put where.
for path in /usr/bin/pbxmesh /opt/pbxmesh/bin/python "$UNIT" "$CONF" \
    /etc/corosync/uidgid.d/pbxmesh /usr/share/doc/pbxmesh/copyright \
    /usr/share/man/man1/pbxmesh.1.gz; do
    [ -e "$path" ] || fail "$path is missing"
done
[ "$(readlink -f /usr/bin/pbxmesh)" = /opt/pbxmesh/bin/pbxmesh ] \
    || fail "/usr/bin/pbxmesh does not lead into /opt/pbxmesh"
conffiles=$(dpkg-query -W -f='${Conffiles}' pbxmesh)
for path in "$CONF" /etc/corosync/uidgid.d/pbxmesh; do
    grep -q " $path " <<<"$conffiles" || fail "$path is not a conffile"
done
user=$(sed -n 's/^User=//p' "$UNIT")
group=$(sed -n 's/^Group=//p' "$UNIT")
[ -n "$user" ] && [ "$user" != root ] || fail "the unit runs as '${user:-root}', not a system user"
getent passwd "$user" >/dev/null || fail "the unit's user $user does not exist"
uid=$(id -u "$user")
[ "$uid" -lt 1000 ] || fail "$user is not a system user (uid $uid)"
[ "$(getent passwd "$user" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "$user has a login shell"
[ "$(stat -c '%U:%G %a' /var/lib/pbxmesh)" = "$user:$group 750" ] \
    || fail "/var/lib/pbxmesh is $(stat -c '%U:%G %a' /var/lib/pbxmesh)"
[ "$(stat -c '%U:%G %a' "$CONF")" = "root:$group 640" ] || fail "$CONF is $(stat -c '%U:%G %a' "$CONF")"
[ "$(pbxmesh --version)" = "pbxmesh $(/opt/pbxmesh/bin/python -c 'import pbxmesh; print(pbxmesh.__version__)')" ] \
    || fail "pbxmesh --version disagrees with the installed module"
pbxmesh --help >"$work/help.log" 2>&1 || fail "pbxmesh --help failed"
grep -q "check-config" "$work/help.log" || fail "pbxmesh --help lists no commands"
as_user=(setpriv --reuid="$user" --regid="$group" --init-groups --no-new-privs
    --inh-caps=-all --bounding-set=-all --reset-env)
"${as_user[@]}" pbxmesh -c "$CONF" check-config >"$work/check-config.log" 2>&1 \
    || fail "pbxmesh check-config on the shipped configuration failed (as $user)"
# As docs/security.md says: the node key is made as the daemon's user, so that it can read it.
runuser -u "$user" -- pbxmesh -c "$CONF" keygen >"$work/keygen.log" 2>&1 || fail "keygen as $user"
[ "$(stat -c '%U %a' /var/lib/pbxmesh/node.key)" = "$user 600" ] || fail "node.key's owner or mode"
step "files, user $user (uid $uid), modes, --help, check-config and keygen: ok"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$UNIT" >"$work/verify.log" 2>&1 || fail "systemd-analyze verify $UNIT"
    # The sandbox must not quietly lose options: exposure at most 2.0 of 10 (1.5 today).
    systemd-analyze security --offline=true --threshold=20 "$UNIT" >"$work/security.log" 2>&1 \
        || fail "the unit's exposure is above 2.0: $(tail -n 1 "$work/security.log")"
fi

# 3. The unit's ExecStart against a real corosync, as the unit's user.
exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
[ "${exec_start:0:1}" = / ] || fail "unexpected ExecStart line: $exec_start"
umask_unit=$(sed -n 's/^UMask=//p' "$UNIT")
read -r -a exec_argv <<<"$exec_start"
ip netns add "$ns" && ns_made=1
ip -n "$ns" link set lo up
mkdir -p "$work/run" "$work/state"
cat >"$work/corosync.conf" <<EOF
totem {
    version: 2
    cluster_name: pbxmdeb
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
    node {
        nodeid: 1
        name: deb1
        ring0_addr: 127.0.0.1
    }
}
system {
    state_dir: $work/state
    move_to_root_cgroup: no
    sched_rr: no
}
logging {
    to_stderr: no
    to_syslog: no
    to_logfile: yes
    logfile: $work/corosync.log
}
EOF
# ip netns exec gives the command a mount namespace of its own, where this configuration is
# bind-mounted over /etc/corosync/corosync.conf (corosync reads uidgid.d beside its
# configuration file: so it reads the package's /etc/corosync/uidgid.d/pbxmesh as in
# production) and a private /run (its pid file is a fixed path). ip, sh and corosync all exec.
[ -f /etc/corosync/corosync.conf ] || fail "/etc/corosync/corosync.conf is missing (corosync)"
ip netns exec "$ns" sh -c "mount --bind '$work/run' /run \
    && mount --bind '$work/corosync.conf' /etc/corosync/corosync.conf && exec corosync -f" \
    >"$work/corosync-stderr.log" 2>&1 </dev/null &
corosync_pid=$!
wait_for 20 "corosync ready" ip netns exec "$ns" corosync-cpgtool
step "corosync runs in network namespace $ns"

read -r ami_host ami_port ami_user ami_secret < <(/opt/pbxmesh/bin/python - "$CONF" <<'EOF'
import sys, tomllib
a = tomllib.load(open(sys.argv[1], "rb"))["asterisk"]
host, _, port = a["ami"].rpartition(":")
print(host, port, a["username"], a["secret"])
EOF
)
ip netns exec "$ns" setpriv --reuid=nobody --regid=nogroup --clear-groups \
    pbxmesh sim --listen "$ami_host:$ami_port" --username "$ami_user" --secret "$ami_secret" \
    >"$work/sim.log" 2>&1 </dev/null &
sim_pid=$!

(
    cd /
    umask "${umask_unit:-0022}"
    exec ip netns exec "$ns" "${as_user[@]}" "${exec_argv[@]}"
) >"$work/pbxmesh.log" 2>&1 </dev/null &
node_pid=$!
step "started as $user: $exec_start"
in_ns() { ip netns exec "$ns" "$@"; }
node_status() {
    kill -0 "$node_pid" 2>/dev/null || fail "the daemon exited"
    in_ns pbxmesh -c "$CONF" status
}
wait_for 30 "pbxmesh status answering (corosync link up, Asterisk connected)" node_status
in_ns pbxmesh -c "$CONF" status | sed 's/^/    /'
in_ns pbxmesh -c "$CONF" members >"$work/members.log" 2>&1 || fail "pbxmesh members failed"
sed 's/^/    /' "$work/members.log"
node_name=$(/opt/pbxmesh/bin/python -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["node"]["name"])' "$CONF")
grep -q "^$node_name (this node) .* Yes " "$work/members.log" \
    || fail "members does not list $node_name as this node and a member"
in_ns corosync-cpgtool -e >"$work/cpgtool.log" 2>&1 || fail "corosync-cpgtool failed"
grep -qw "$node_pid" "$work/cpgtool.log" || fail "corosync does not list pid $node_pid in a CPG group"
[ "$(stat -c %U "/proc/$node_pid")" = "$user" ] || fail "the daemon does not run as $user"
[ -s /var/lib/pbxmesh/eid ] || fail "the daemon wrote no EID in /var/lib/pbxmesh"
step "status and members answer; corosync lists the daemon (pid $node_pid, user $user) in its group"

# ExecReload is kill -HUP $MAINPID.
reload=$(sed -n 's/^ExecReload=//p' "$UNIT")
read -r -a reload_argv <<<"${reload//\$MAINPID/$node_pid}"
"${reload_argv[@]}" || fail "ExecReload ($reload) failed"
wait_for 10 "the reload after SIGHUP" grep -q "reload done" "$work/pbxmesh.log"
kill -0 "$node_pid" 2>/dev/null || fail "the daemon died on SIGHUP"
kill -TERM "$node_pid"
end=$((SECONDS + $(sed -n 's/^TimeoutStopSec=//p' "$UNIT")))
while kill -0 "$node_pid" 2>/dev/null; do
    [ "$SECONDS" -lt "$end" ] || fail "the daemon did not stop within TimeoutStopSec after SIGTERM"
    sleep 0.1
done
rc=0
wait "$node_pid" || rc=$?
node_pid=""
[ "$rc" -eq 0 ] || fail "the daemon exited with $rc after SIGTERM"
grep -q "leaving the cluster" "$work/pbxmesh.log" || fail "the daemon did not leave the cluster"
step "SIGHUP reloaded, SIGTERM stopped it cleanly (exit 0)"

# 4. Upgrade (the same package again), remove, purge.
echo "# edited by the administrator" >>"$CONF"
DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall "./$deb" >"$work/reinstall.log" 2>&1 \
    || fail "reinstalling ./$deb failed"
grep -q "^# edited by the administrator" "$CONF" || fail "the upgrade lost an edited $CONF"
[ ! -e "$CONF.dpkg-new" ] && [ ! -e "$CONF.dpkg-dist" ] || fail "the upgrade left $CONF.dpkg-*"
[ "$(stat -c '%U:%G %a' "$CONF")" = "root:$group 640" ] || fail "the upgrade changed $CONF's mode"
pbxmesh --version >/dev/null || fail "pbxmesh does not run after the upgrade"
apt-get remove -y -qq pbxmesh >"$work/remove.log" 2>&1 || fail "apt-get remove pbxmesh failed"
[ ! -e /opt/pbxmesh ] || fail "remove left /opt/pbxmesh"
[ -e "$CONF" ] || fail "remove (not purge) deleted the configuration"
apt-get purge -y -qq pbxmesh >"$work/purge.log" 2>&1 || fail "apt-get purge pbxmesh failed"
for path in /opt/pbxmesh /usr/bin/pbxmesh /usr/lib/pbxmesh /etc/pbxmesh /var/lib/pbxmesh "$UNIT" \
    /etc/corosync/uidgid.d/pbxmesh /usr/share/doc/pbxmesh /usr/share/man/man1/pbxmesh.1.gz; do
    [ ! -e "$path" ] && [ ! -L "$path" ] || fail "purge left $path"
done
! dpkg-statoverride --list "$CONF" >/dev/null || fail "purge left the statoverride of $CONF"
! dpkg -s pbxmesh >/dev/null 2>&1 || fail "pbxmesh is still known to dpkg"
step "upgrade kept the edited configuration; remove kept it; purge left only the user $user"
echo "deb check: PASS"
