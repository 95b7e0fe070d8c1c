# The two commands: `make demo` and `make test`. Both install and start what they
# need (see scripts/local-stack.sh); slow installs are cached in
# ~/.cache/ticket-pipeline (PIPELINE_CACHE_DIR).
SHELL := /bin/bash
.DEFAULT_GOAL := help
STACK := scripts/local-stack.sh

.PHONY: help demo test bench soak up down services install lint fmt lambda-build lambda-build-arm64

help:
	@echo "make demo   run the whole pipeline locally and show it working"
	@echo "make test   unit and end-to-end tests against moto + tansu"
	@echo "make bench  benchmarks beside their baselines (BENCHMARKS.md); ARGS=\"--only relay\""
	@echo "make soak   payments under faults; checks nothing lost, nothing sent twice; ARGS=\"--payments 500\""
	@echo "make up     start the local stack (moto, tansu, sandbox, runner); make down stops it"
	@echo "make lint   cargo fmt --check and clippy -D warnings"
	@echo "make lambda-build        sam build for x86_64 (cargo-lambda, no Docker), with sizes"
	@echo "make lambda-build-arm64  sam build for arm64 (zig cross-compiles librdkafka)"

install:
	@$(STACK) install

services:
	@$(STACK) services

up:
	@$(STACK) up

down:
	@$(STACK) down

lint:
	@source scripts/toolchain.sh && cargo fmt --all -- --check && \
	  cargo clippy --locked --workspace --all-targets --quiet -- -D warnings

lambda-build:
	@$(STACK) lambda-build x86_64

lambda-build-arm64:
	@$(STACK) lambda-build arm64

# Starts moto and tansu for the tests (reusing running ones) and stops what it started.
test:
	@scripts/test.sh

demo:
	@scripts/demo.sh

bench:
	@scripts/bench.sh $(ARGS)

soak:
	@scripts/soak.sh $(ARGS)
