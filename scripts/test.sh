#!/usr/bin/env bash
# `make test`: lint, then unit and end-to-end tests against real moto and tansu,
# which it starts (installing them first if needed) and stops again.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/local-env.sh

# A full disk shows up as the linker dying with SIGBUS ("ld terminated with
# signal 7 [Bus error]"), not as "no space left": say it before building.
free_gb=$(df --output=avail -BG "$ROOT" | tail -n 1 | tr -dc '0-9')
if [ "${free_gb:-0}" -lt "${MIN_FREE_GB:-15}" ]; then
  echo "[make test] warning: ${free_gb:-?} GB free on the disk of $ROOT; the first run needs about 12 GB (target/ 9 GB, the cache 2.5 GB), and a full disk fails the link with 'signal 7 [Bus error]'" >&2
fi

# Its own state folder: stopping at the end never touches a stack `make up` started.
export PIPELINE_STATE_DIR="$ROOT/.local/test"
mkdir -p "$PIPELINE_STATE_DIR"
trap 'scripts/local-stack.sh down' EXIT
# The tests that run brokers of their own need tansu's binary even when a
# Kafka already listens on 9092.
scripts/local-stack.sh install
scripts/local-stack.sh services

echo "== template.yaml (cfn-lint, sam validate --lint)"
scripts/local-stack.sh lint-template

echo "== docker-compose.localstack.yml (Compose specification schema)"
scripts/local-stack.sh validate-compose

echo "== sam build (x86_64, cargo-lambda, no Docker)"
scripts/local-stack.sh lambda-build x86_64
# The bootstrap smoke tests run these binaries under a Lambda Runtime API.
export BOOTSTRAP_DIR="$ROOT/.aws-sam/build-x86_64"
# The init benchmark's baseline, for the bench smoke test.
HELLO_BOOTSTRAP=$(scripts/local-stack.sh hello-build)
export HELLO_BOOTSTRAP

echo "== cargo deny (licenses, sources, duplicate versions; advisories where reachable)"
scripts/local-stack.sh deny

echo "== fmt and clippy"
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets --quiet -- -D warnings

echo "== tests"
cargo test --locked --workspace --no-fail-fast 2>&1 | tee "$PIPELINE_STATE_DIR/test-output.log"

echo "== the README's walk-through, pasted into a shell on make up's stack"
scripts/walkthrough.sh
