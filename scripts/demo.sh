#!/usr/bin/env bash
# npm run demo: boots the VM test bed and runs the seed procedure with the dmsnap CLI
# (scripts/demo-guest.sh). Options are those of scripts/vm/run.sh (--kernel, --udev).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -f dist/dmsnap.js ]] || { echo "demo.sh: run 'npm install' first (it builds dmsnap)" >&2; exit 1; }
exec scripts/vm/run.sh "$@" -- bash scripts/demo-guest.sh
