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
echo "demo check: passed"
