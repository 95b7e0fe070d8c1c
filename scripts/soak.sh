#!/usr/bin/env bash
# `make soak`: payments under faults through the local pipeline (see the README):
# starts moto and tansu (tansu on sqlite, so the restart mid-run keeps what it
# held) in a state folder of its own, runs the soak, stops them. Arguments go to
# the soak, e.g. `make soak ARGS="--payments 500"`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/local-env.sh

export PIPELINE_STATE_DIR="$ROOT/.local/soak"
rm -rf "$PIPELINE_STATE_DIR"
mkdir -p "$PIPELINE_STATE_DIR"
export TANSU_STORAGE=sqlite
trap 'scripts/local-stack.sh down' EXIT
scripts/local-stack.sh services

echo "== the soak (release)" >&2
SOAK=$(scripts/release-tool.sh soak)
"$SOAK" --restart-broker "$ROOT/scripts/local-stack.sh restart-tansu" "$@"
