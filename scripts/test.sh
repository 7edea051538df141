#!/usr/bin/env bash
# Every check pbxmesh has: lint, types, then the test suite, starting the real corosync and
# nats-server daemons the tests need (loopback and network namespaces; needs root).
# Extra arguments go to pytest, e.g. scripts/test.sh -k store
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests bench fuzz scripts
ruff format --check src tests bench fuzz scripts
mypy
python -m pytest -q -p no:cacheprovider "$@"
