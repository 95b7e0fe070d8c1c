# The environment of a local run: endpoints on 127.0.0.1 and local-only secrets.
# Sourced by the scripts and the Makefile; anything already set wins.
# shellcheck source=scripts/toolchain.sh
source "$(dirname "${BASH_SOURCE[0]}")/toolchain.sh"
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}
export AWS_REGION=${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
export KAFKA_BOOTSTRAP_SERVERS=${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:9092}
# The Kafka broker's binary, for the tests that run brokers of their own.
export TANSU_BIN=${TANSU_BIN:-${PIPELINE_CACHE_DIR:-$HOME/.cache/ticket-pipeline}/tansu-0.6.0/bin/tansu}
export TELEGRAM_API_BASE_URL=${TELEGRAM_API_BASE_URL:-http://127.0.0.1:8081}
# Which channels each event goes to: telegram, discord or telegram,discord.
export NOTIFY_PAYMENT_COMPLETED_CHANNELS=${NOTIFY_PAYMENT_COMPLETED_CHANNELS:-telegram}
export NOTIFY_SEAT_HOLD_EXPIRED_CHANNELS=${NOTIFY_SEAT_HOLD_EXPIRED_CHANNELS:-telegram,discord}
# Local secrets only: in AWS these come from Secrets Manager / SSM.
export TELEGRAM_BOT_TOKEN=${TELEGRAM_BOT_TOKEN:-local-sandbox-token}
export TELEGRAM_CHAT_ID=${TELEGRAM_CHAT_ID:-10001}
export DISCORD_WEBHOOK_URL=${DISCORD_WEBHOOK_URL:-http://127.0.0.1:8081/api/webhooks/20002/local-sandbox-webhook-token}
export JWT_SECRET=${JWT_SECRET:-local-only-jwt-secret-change-me-0123456789}
# The data platform (the sandbox serves its API): the local runner then runs the
# feed, and dlq-retry retries its dead letters. Set it empty to run without the feed.
export DATA_PLATFORM_URL=${DATA_PLATFORM_URL-http://127.0.0.1:8081}
export DATA_PLATFORM_API_KEY=${DATA_PLATFORM_API_KEY:-sandbox-data-platform-key}
export DATA_PLATFORM_PSEUDONYM_KEY=${DATA_PLATFORM_PSEUDONYM_KEY:-local-only-pseudonym-key-0123456789}
