#!/usr/bin/env bash
# `make bench`: the benchmarks (see BENCHMARKS.md) against moto and tansu, which
# it starts (installing them first if needed) and stops again. Arguments go to
# the harness, e.g. `make bench ARGS="--only relay --runs 9"`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/local-env.sh

# Its own state folder: stopping at the end never touches a stack `make up` started.
export PIPELINE_STATE_DIR="$ROOT/.local/bench"
mkdir -p "$PIPELINE_STATE_DIR"
trap 'scripts/local-stack.sh down' EXIT
scripts/local-stack.sh services

echo "== release bootstraps (sam build, x86_64) and the hello-world baseline" >&2
scripts/local-stack.sh lambda-build x86_64 >&2
HELLO=$(scripts/local-stack.sh hello-build)

echo "== the harness (release)" >&2
BENCH=$(scripts/release-tool.sh bench)

echo "== benchmarks (JSON lines on stdout, the table on stderr)" >&2
"$BENCH" \
  --bootstrap-dir "$ROOT/.aws-sam/build-x86_64" --hello "$HELLO" "$@"
