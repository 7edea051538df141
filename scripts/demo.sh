#!/usr/bin/env bash
# The README's main command: install what pbxmesh needs (as root on Debian), then start the
# local three-server demo cluster. Arguments go to `pbxmesh demo` (--no-wait, --keep, --dir).
set -euo pipefail
cd "$(dirname "$0")/.."
PBXMESH_EXTRAS=nats PBXMESH_NO_BROWSER=1 bash scripts/setup.sh
exec .venv/bin/pbxmesh demo "$@"
