#!/usr/bin/env bash
# CI: run the README's main command non-interactively and check that the seed's scenario
# really played: the hint lit up on the other servers, went back to Idle, MWI arrived, presence
# followed alice to the other servers and cleared, and a leaving server did not leave stale
# lamps behind.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if ! timeout 300 bash scripts/demo.sh --no-wait >"$out" 2>&1; then
    echo "demo failed:"; cat "$out"; exit 1
fi
cat "$out"
for expected in \
    "State:InUse" \
    "pbx2: MailboxCount 1000@default → 2 new, 1 old" \
    "pbx3: alice is dnd, 'back at 3'" \
    "alice is back: pbx3 shows her available again" \
    "pbx1's hint is back to Idle" \
    "Scenario complete: every step behaved as described."; do
    grep -qF -- "$expected" "$out" || { echo "demo check: missing '$expected'"; exit 1; }
done
# The same scenario with each PBX linked over SIP PUBLISH: the tutorial's hint line untouched.
if ! timeout 300 .venv/bin/pbxmesh demo --sip --no-wait >"$out" 2>&1; then
    echo "demo --sip failed:"; cat "$out"; exit 1
fi
cat "$out"
for expected in \
    "exten => 1234,hint,Custom:mystate" \
    "State:InUse" \
    "pbx2: MessageWaiting 1000@default → 2 new, 1 old" \
    "pbx1's hint is back to Idle" \
    "Scenario complete: every step behaved as described."; do
    grep -qF -- "$expected" "$out" || { echo "demo --sip check: missing '$expected'"; exit 1; }
done
if grep -qF "Custom:remote-" "$out"; then
    echo "demo --sip check: a counterpart device appeared in the hints"; exit 1
fi
echo "demo check: passed"
