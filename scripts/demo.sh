#!/usr/bin/env bash
# `make demo`: brings the local stack up (installing what is missing), runs the
# demo scenario through the real pipeline, and stops what it started.
# KEEP_STACK=1 leaves the stack running afterwards (then `make down` stops it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/local-env.sh
# Retries in seconds rather than minutes, so the failure scenarios finish quickly.
export RETRY_DELAY_SECONDS=${RETRY_DELAY_SECONDS:-1}
export DLQ_RETRY_INTERVAL_SECONDS=${DLQ_RETRY_INTERVAL_SECONDS:-2}
export DLQ_BACKOFF_BASE_SECONDS=${DLQ_BACKOFF_BASE_SECONDS:-2}
export DLQ_MAX_RETRIES=${DLQ_MAX_RETRIES:-5}
# Holds that expire in seconds, and a seat-expiration run every two.
export HOLD_SECONDS=${HOLD_SECONDS:-8}
export SEAT_EXPIRATION_INTERVAL_SECONDS=${SEAT_EXPIRATION_INTERVAL_SECONDS:-2}

if [ "${KEEP_STACK:-0}" != 1 ]; then
  # Its own state folder: stopping at the end never touches a stack `make up` started.
  export PIPELINE_STATE_DIR="$ROOT/.local/demo"
  trap 'scripts/local-stack.sh down' EXIT
fi
scripts/local-stack.sh up
status=0
transcript="${PIPELINE_STATE_DIR:-$ROOT/.local}/demo-output.txt"
started=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
"$ROOT/target/debug/ops" demo | tee "$transcript" || status=$?
# The run's business metrics: the EMF lines the functions wrote to the runner's log.
echo
echo "== the run's metrics (EMF lines in the local runner's log, summed as CloudWatch would)"
"$ROOT/target/debug/ops" metrics "${PIPELINE_STATE_DIR:-$ROOT/.local}/logs/local-runner.log" ||
  echo "(no local runner log here: the runner was started by another stack)"
# One payment's whole story: the one that waited out the Telegram outage.
traced=$(sed -n 's/.*`ops trace \([0-9a-f-]*\)`.*/\1/p' "$transcript" | tail -n 1)
if [ -n "$traced" ]; then
  echo
  echo "== ops trace $traced (fan D's payment, through the Telegram outage)"
  "$ROOT/target/debug/ops" trace "$traced" --sandbox "${DEMO_SANDBOX_URL:-http://127.0.0.1:8081}" ||
    status=1
fi
# The run's payments against the topic, every destination and the ledger:
# nothing missing, nothing twice (the failure the demo left is an open case).
echo
echo "== ops reconcile --from $started (the demo's own payments)"
"$ROOT/target/debug/ops" reconcile --from "$started" --grace-seconds 0 || status=1
exit "$status"
