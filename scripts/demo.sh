#!/usr/bin/env bash
# `make demo`: brings the local stack up (installing what is missing), runs the
# demo scenario through the real pipeline, and stops what it started.
# KEEP_STACK=1 leaves the stack running afterwards (then `make down` stops it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/local-env.sh

if [ "${KEEP_STACK:-0}" != 1 ]; then
  # Its own state folder: stopping at the end never touches a stack `make up` started.
  export PIPELINE_STATE_DIR="$ROOT/.local/demo"
  trap 'scripts/local-stack.sh down' EXIT
fi
scripts/local-stack.sh up
"$ROOT/target/debug/ops" demo
