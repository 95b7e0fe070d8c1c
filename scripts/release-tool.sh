#!/usr/bin/env bash
# Builds a workspace tool (bench, soak) in release and prints its path. It builds
# in the bootstraps' cached release target folder, with the settings cargo-lambda
# builds them with, so their dependencies are reused, not built again.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
package=${1:?usage: $0 PACKAGE}
target=${LAMBDA_TARGET_DIR:-${PIPELINE_CACHE_DIR:-$HOME/.cache/ticket-pipeline}/lambda-target-x86_64}
CARGO_TARGET_DIR=$target cargo build --quiet --locked --release \
  --target x86_64-unknown-linux-gnu \
  --config 'profile.release.panic="abort"' --config 'build.rustflags=["-C", "target-cpu=haswell"]' \
  -p "$package" >&2
echo "$target/x86_64-unknown-linux-gnu/release/$package"
