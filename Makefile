# capvisor top-level build. `make test` and `make run` install what they need first.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test bench fmt clippy

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace

test: deps guests
	$(CARGO) test --workspace

bench: deps
	$(CARGO) bench --workspace

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets

# Test guests (guests/, own workspace): multiboot kernels built for x86_64-unknown-none
# and converted to ELF32, which is what `qemu-system-x86_64 -kernel` accepts.
.PHONY: guests
GUESTS := hello kernexec ptwrite hugeexec
GUESTS_TARGET_DIR := $(CURDIR)/guests/target
guests: deps
	cd guests && $(CARGO) build --release --target-dir $(GUESTS_TARGET_DIR)
	@mkdir -p build/guests
	@for g in $(GUESTS); do \
	    objcopy -O elf32-i386 $(GUESTS_TARGET_DIR)/x86_64-unknown-none/release/$$g build/guests/$$g.elf || exit 1; \
	done
