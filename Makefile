# capvisor top-level build. `make test` and `make run` install what they need first.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: all deps build test bench fmt clippy

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace

test: deps guests sel4-image
	$(CARGO) test --workspace

# `make bench`: the benchmarks in a few minutes (criterion at 1 s warm-up, 3 s of
# measurement, 20 samples; the seeds harness 3 interleaved rounds of kernexec). Logs go
# to build/bench/, and the run ends with a summary (scripts/bench-summary.sh). Longer
# runs: `cargo bench -p <crate> --bench <name>` (see docs/BENCHMARKS.md).
BENCH_CRITERION ?= --warm-up-time 1 --measurement-time 3 --sample-size 20
bench: deps guests
	@mkdir -p build/bench
	set -o pipefail; $(CARGO) bench -p mmu-server --bench mmu -- $(BENCH_CRITERION) | tee build/bench/mmu.txt
	set -o pipefail; $(CARGO) bench -p vcpu --bench translate -- $(BENCH_CRITERION) | tee build/bench/translate.txt
	set -o pipefail; $(CARGO) bench -p vcpu --bench mips -- $(BENCH_CRITERION) | tee build/bench/mips.txt
	set -o pipefail; BENCH_QUICK=1 $(CARGO) bench -p capvisor --bench seeds | tee build/bench/seeds.txt
	@scripts/bench-summary.sh build/bench

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets

# Test guests (guests/, own workspace): multiboot kernels built for x86_64-unknown-none
# and converted to ELF32, which is what `qemu-system-x86_64 -kernel` accepts.
.PHONY: guests
GUESTS := hello kernexec ptwrite hugeexec faults
GUESTS_TARGET_DIR := $(CURDIR)/guests/target
guests: deps
	cd guests && $(CARGO) build --release --target-dir $(GUESTS_TARGET_DIR)
	@mkdir -p build/guests
	@for g in $(GUESTS); do \
	    objcopy -O elf32-i386 $(GUESTS_TARGET_DIR)/x86_64-unknown-none/release/$$g build/guests/$$g.elf || exit 1; \
	done

# seL4 (kernel/, root-task/): the seL4 5.0.0 kernel built from the sources of the
# pinned sel4-sys 0.0.28 crate, and the root task it boots. Two kernel configurations
# (kernel/config/): qemu-tcg (QEMU -cpu max) and any-cpu (any QEMU CPU model). The root
# task is built once per configuration because object-type numbers depend on it.
.PHONY: kernel root-task sel4-image
ROOT_TASK_TARGET_DIR := $(CURDIR)/root-task/target
kernel: deps
	kernel/build.sh qemu-tcg build/kernel
	kernel/build.sh any-cpu build/kernel-any-cpu
root-task: deps
	cd root-task && SEL4_KERNEL_CONFIG=qemu-tcg $(CARGO) build --release --target-dir $(ROOT_TASK_TARGET_DIR)/qemu-tcg --bin capvisor-root-task
	cd root-task && SEL4_KERNEL_CONFIG=any-cpu $(CARGO) build --release --target-dir $(ROOT_TASK_TARGET_DIR)/any-cpu --bin capvisor-root-task
	@mkdir -p build
	cp $(ROOT_TASK_TARGET_DIR)/qemu-tcg/x86_64-unknown-none/release/capvisor-root-task build/root-task.elf
	cp $(ROOT_TASK_TARGET_DIR)/any-cpu/x86_64-unknown-none/release/capvisor-root-task build/root-task-any-cpu.elf
sel4-image: kernel root-task sel4-system

# The system root task (root-task/src/bin/system): instantiates a capDL spec embedded at
# build time with the ELF images of its PDs. The PDs (drivers/*-pd, root-task/mmu-server-pd,
# root-task/test-pds) are built in the root task's workspace once per kernel
# configuration and stripped into build/pd/<elf>.elf (qemu-tcg) and
# build/pd-any-cpu/<elf>.elf; each spec of SYSTEM_SPECS (root-task/specs/<name>.toml)
# becomes build/specs/<name>.capdl.bin and a root task build/system-<name>.elf, and
# those of SYSTEM_SPECS_ANY_CPU also build/system-<name>-any-cpu.elf.
# The vmm-server PD (root-task/vmm-server-pd, ELF vmm_server) embeds the guest images
# (so it needs `make guests`) and is built for qemu-tcg only: the specs that run
# guests on seL4 (VM_SPECS) boot on `-cpu max`.
.PHONY: sel4-pds sel4-specs sel4-system
SEL4_PDS := uart uart_faulty timer mmu_server mmu_server_faulty mmu_server_faulty_late test_ticks test_client test_vmm
SEL4_PDS_QEMU_TCG := vmm_server
VM_SPECS := demo vm-tdp vm-shadow isolation nx kill vm-failure vmm-dies
SYSTEM_SPECS := system-test fault-test too-big-test bad-device-test mmu-test restart-test uart-restart-test hpet-test $(VM_SPECS)
SYSTEM_SPECS_ANY_CPU := system-test mmu-test
sel4-pds: deps guests
	@for cfg in qemu-tcg any-cpu; do \
	    out=build/pd; [ $$cfg = qemu-tcg ] || out=build/pd-$$cfg; \
	    (cd root-task && SEL4_KERNEL_CONFIG=$$cfg $(CARGO) build --release --target-dir $(ROOT_TASK_TARGET_DIR)/$$cfg \
	        -p uart-pd -p timer-pd -p mmu-server-pd -p capvisor-test-pds) || exit 1; \
	    mkdir -p $$out; \
	    for p in $(SEL4_PDS); do \
	        objcopy --strip-all $(ROOT_TASK_TARGET_DIR)/$$cfg/x86_64-unknown-none/release/$$p $$out/$$p.elf || exit 1; \
	    done; \
	done
	(cd root-task && CAPVISOR_GUEST_DIR=$(CURDIR)/build/guests SEL4_KERNEL_CONFIG=qemu-tcg $(CARGO) build --release \
	    --target-dir $(ROOT_TASK_TARGET_DIR)/qemu-tcg -p vmm-server-pd)
	@for p in $(SEL4_PDS_QEMU_TCG); do \
	    objcopy --strip-all $(ROOT_TASK_TARGET_DIR)/qemu-tcg/x86_64-unknown-none/release/$$p build/pd/$$p.elf || exit 1; \
	done
sel4-specs: deps
	@mkdir -p build/specs
	@for s in $(SYSTEM_SPECS); do \
	    $(CARGO) run -q -p capdl -- binary root-task/specs/$$s.toml -o build/specs/$$s.capdl.bin || exit 1; \
	done
sel4-system: sel4-pds sel4-specs
	@for s in $(SYSTEM_SPECS); do \
	    (cd root-task && CAPVISOR_SPEC=$(CURDIR)/build/specs/$$s.capdl.bin CAPVISOR_PD_DIR=$(CURDIR)/build/pd \
	        SEL4_KERNEL_CONFIG=qemu-tcg $(CARGO) build --release --target-dir $(ROOT_TASK_TARGET_DIR)/qemu-tcg --bin capvisor-system) || exit 1; \
	    cp $(ROOT_TASK_TARGET_DIR)/qemu-tcg/x86_64-unknown-none/release/capvisor-system build/system-$$s.elf || exit 1; \
	done
	@for s in $(SYSTEM_SPECS_ANY_CPU); do \
	    (cd root-task && CAPVISOR_SPEC=$(CURDIR)/build/specs/$$s.capdl.bin CAPVISOR_PD_DIR=$(CURDIR)/build/pd-any-cpu \
	        SEL4_KERNEL_CONFIG=any-cpu $(CARGO) build --release --target-dir $(ROOT_TASK_TARGET_DIR)/any-cpu --bin capvisor-system) || exit 1; \
	    cp $(ROOT_TASK_TARGET_DIR)/any-cpu/x86_64-unknown-none/release/capvisor-system build/system-$$s-any-cpu.elf || exit 1; \
	done

# The system spec (capdl/): `make capdl` prints the capDL spec of capdl/system.toml;
# `make capdl-bin` writes build/system.capdl.bin, the binary form the root task reads.
.PHONY: capdl capdl-bin
capdl:
	@$(CARGO) run -q -p capdl -- print capdl/system.toml
capdl-bin:
	@mkdir -p build
	$(CARGO) run -q -p capdl -- binary capdl/system.toml -o build/system.capdl.bin

# `make run`: builds everything and boots seL4 in QEMU with the demo system
# (root-task/specs/demo.toml: the UART and timer driver PDs, the mmu-server PD, and one
# vmm-server PD running kernexec on the software vCPU under TDP). The guest's lines
# appear as "[vm demo] ..."; its isa-debug-exit value 0 ends QEMU with status
# (0 << 1) | 1 = 1: that is success here. Everything runs under QEMU's TCG.
.PHONY: run run-host
RUN_TIMEOUT ?= 300
run: kernel sel4-system
	@status=0; timeout $(RUN_TIMEOUT) qemu-system-x86_64 -accel tcg -cpu max -m 512 -display none -monitor none \
	    -no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
	    -kernel build/kernel/kernel32.elf -initrd build/system-demo.elf || status=$$?; \
	if [ $$status -eq 1 ]; then echo "make run: the demo VM passed on seL4 (guest exit status 1 = success)"; \
	else echo "make run: the demo VM failed on seL4 (status $$status)"; exit 1; fi

# `make run-host` (host runtime, host/ and vmm-server/): builds the demo guest and boots
# it under `capvisor run`. The guest exits through isa-debug-exit with 0, which QEMU and
# capvisor report as status (0 << 1) | 1 = 1: that is success here. Override the guest
# or the options with e.g. `make run-host RUN_GUEST=ptwrite RUN_ARGS="--mmu shadow"`.
RUN_GUEST ?= kernexec
RUN_ARGS ?=
run-host: guests
	$(CARGO) build -q -p capvisor
	@status=0; $(CARGO) run -q -p capvisor -- run $(RUN_ARGS) build/guests/$(RUN_GUEST).elf || status=$$?; \
	if [ $$status -eq 1 ]; then echo "make run-host: $(RUN_GUEST) passed (guest exit status 1 = success)"; \
	else echo "make run-host: $(RUN_GUEST) failed (status $$status)"; exit 1; fi
