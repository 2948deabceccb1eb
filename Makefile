# capvisor top-level build. `make test` and `make run` install what they need first.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test bench fmt clippy

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace

test: deps
	$(CARGO) test --workspace

bench: deps
	$(CARGO) bench --workspace

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets
