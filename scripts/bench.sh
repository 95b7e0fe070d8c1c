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
# In the bootstraps' cached release target folder, with the settings cargo-lambda
# builds them with (so their dependencies are reused, not rebuilt).
HARNESS_TARGET=${LAMBDA_TARGET_DIR:-${PIPELINE_CACHE_DIR:-$HOME/.cache/ticket-pipeline}/lambda-target-x86_64}
CARGO_TARGET_DIR=$HARNESS_TARGET cargo build --quiet --release \
  --target x86_64-unknown-linux-gnu \
  --config 'profile.release.panic="abort"' --config 'build.rustflags=["-C", "target-cpu=haswell"]' \
  -p bench

echo "== benchmarks (JSON lines on stdout, the table on stderr)" >&2
"$HARNESS_TARGET/x86_64-unknown-linux-gnu/release/bench" \
  --bootstrap-dir "$ROOT/.aws-sam/build-x86_64" --hello "$HELLO" "$@"
