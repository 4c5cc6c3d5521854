# Kiri. Quick start: `make run` (a gateway with the example functions), `make test`.
CARGO ?= cargo
CONFIG ?= kiri.example.toml
WASM_TARGET := wasm32-unknown-unknown
FUNCTIONS := kiri-fn-threshold kiri-fn-convert kiri-fn-average kiri-fn-window kiri-fn-zscore kiri-fn-devices
# Guests the tests need besides the examples: the host ABI's fuzz guest.
TEST_GUESTS := kiri-fuzz-guest
# Examples built for WASI preview 1 (wasm32-wasip1, the standard library).
WASI_FUNCTIONS := kiri-fn-threshold-std

.PHONY: help check run test bench bench-smoke node-red soak powercut fuzz lint functions functions-c test-c-sdk functions-wasi functions-as test-as-sdk build assets firmware qemu-node qemu-node-build sensor cross image qemu deb install flash sd-image sd-image-boot setup-run setup-test setup-lint setup-fuzz setup-as clean

## help: list the targets with what each does (from the `##` comments in this Makefile)
help:
	@awk 'function out() { if (name == "") return; n = split(text, w, " "); line = sprintf("  %-13s", name); \
			len = 15; for (i = 1; i <= n; i++) { if (len + length(w[i]) > 99) { print line; \
			line = sprintf("%15s", ""); len = 15 } line = line " " w[i]; len += length(w[i]) + 1 } \
			print line; name = "" } \
		/^## [a-z-]+:/ { out(); sub(/^## /, ""); name = $$0; sub(/:.*/, "", name); \
			text = substr($$0, length(name) + 2); next } \
		/^## / && name != "" { sub(/^##/, ""); text = text $$0; next } \
		{ out() }' $(MAKEFILE_LIST)

## check: the fast loop: formatting, clippy and the unit tests only (no end-to-end, browser,
## fuzz or benchmark runs; `make test` runs everything)
check: setup-lint assets
	$(CARGO) fmt --all -- --check
	python3 scripts/check-modules.py
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace --lib --bins

## run: build the gateway (release) and the example functions, start it with $(CONFIG), with a
## simulated sensor node publishing to it (`kiri-sensor --source simulate`); prints the
## dashboard's address with its token
run: setup-run assets functions
	$(CARGO) build --release -p kiri -p kiri-sensor
	@./target/release/kiri dashboard --config $(CONFIG)
	@./target/release/kiri-sensor --source simulate --node sim --rate 1 \
		--client-id kiri-sensor-run >/dev/null 2>&1 & sensor=$$!; \
	trap 'kill $$sensor 2>/dev/null' EXIT INT TERM; \
	./target/release/kiri run --config $(CONFIG)

## test: unit, property, end-to-end and browser tests, the C and AssemblyScript SDKs' tests, and the
## arm64 and armhf Debian packages (installs Mosquitto, clang, lld, wasi-libc, qemu, the arm cross
## compilers, Chromium, chromedriver, Node.js and npm as root if missing)
test: setup-test assets functions functions-c test-c-sdk functions-wasi functions-as test-as-sdk firmware sensor image node-red
	@$(MAKE) --no-print-directory bench-smoke
	@cross/build.sh armv7-unknown-linux-gnueabihf
	@cross/deb.sh arm64 armhf
	@scripts/test.sh

## bench: the benchmarks (release build, LTO): criterion micro benchmarks, then Kiri against
## Mosquitto alone and Node-RED on the same load, store-and-forward over TLS and the
## footprint (with the aarch64 device build for its size); rewrites BENCHMARKS.md
bench: setup-test assets functions node-red
	cross/build.sh aarch64-unknown-linux-musl
	$(CARGO) bench -p kiri --bench micro
	$(CARGO) bench -p kiri --bench pipeline
	python3 scripts/bench-report.py

## bench-smoke: every benchmark once and briefly, in the test profile, so none rots (`make
## test` runs it; nothing is asserted about speed)
bench-smoke: functions node-red
	$(CARGO) test -p kiri --benches

## node-red: the pinned Node-RED the benchmark compares against, under .cache/node-red
node-red:
	@scripts/node-red.sh install

## soak: the delivery proofs, longer: a crash loop of SOAK_KILLS SIGKILLs over SOAK_EVENTS
## readings, SOAK_MODEL_CASES random sequences of the outbox and pipeline model checks, then the soak under
## faults for DURATION (seconds, or 10m, 1h) at SOAK_RATE readings/s; its report is printed
## and kept in target/soak/report.json (SOAK_FAULTS: a comma-separated choice of fault kinds)
SOAK_KILLS ?= 40
SOAK_EVENTS ?= 40000
SOAK_MODEL_CASES ?= 5000
DURATION ?= 600
SOAK_RATE ?= 200
soak: setup-test assets functions
	TEST_MODEL_CASES=$(SOAK_MODEL_CASES) $(CARGO) test -p kiri --lib the_outbox_matches_its_model
	TEST_MODEL_CASES=$(SOAK_MODEL_CASES) $(CARGO) test -p kiri --lib the_pipeline_acknowledges_answers_and_forwards_only_what_is_committed
	TEST_CRASH_KILLS=$(SOAK_KILLS) TEST_CRASH_EVENTS=$(SOAK_EVENTS) \
		$(CARGO) test -p kiri --test e2e -- --nocapture crash_loop link_faults
	TEST_SOAK_SECONDS=$(DURATION) TEST_SOAK_RATE=$(SOAK_RATE) $(if $(SOAK_FAULTS),TEST_SOAK_FAULTS=$(SOAK_FAULTS)) \
		$(CARGO) test -p kiri --test e2e -- --nocapture --exact soak::soak_under_faults

## powercut: the power-cut loop, long: POWER_CUTS cuts of the simulated board's power for each
## site broker mode (the embedded broker, Mosquitto), its data disk the disk that forgets;
## fails on any acknowledged reading lost; the report is kept in target/powercut/report.md
POWER_CUTS ?= 100
powercut: setup-test assets functions image
	@mkdir -p target/powercut
	TEST_POWER_CUTS=$(POWER_CUTS) TEST_POWER_CUT_REPORT=$(CURDIR)/target/powercut/report.md \
		$(CARGO) test -p kiri --test e2e -- --nocapture --exact powercut::acknowledged_readings_survive_power_cuts_in_both_site_broker_modes
	@cat target/powercut/report.md

## fuzz: each fuzz target (fuzz/: the CBOR decoders, deploy packages, the config loader, topic
## filters, outbox records, the host ABI) under libFuzzer for FUZZ_SECONDS, one summary line
## per target (executions, exec/s, cov, ft); fails on a crash, whose input is then a
## regression test in fuzz/regressions/ (installs nightly and cargo-fuzz if missing)
FUZZ_SECONDS ?= 60
fuzz: setup-fuzz assets functions
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz.sh

## lint: formatting and clippy, for the host and for the wasm guests; the shape of gateway/src
## (scripts/check-modules.py: no module cycle, no impl out of its module, no unexplained file over
## 500 lines); the dependency graph with cargo-deny (deny.toml: licenses, bans, sources;
## advisories when the RustSec database can be fetched, and a clear line when it cannot)
lint: setup-lint assets
	$(CARGO) fmt --all -- --check
	python3 scripts/check-modules.py
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(addprefix -p ,$(FUNCTIONS) $(TEST_GUESTS) kiri-sdk) -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 $(addprefix -p ,$(WASI_FUNCTIONS)) -- -D warnings
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --target thumbv7em-none-eabihf $(FIRMWARE_CRATES) -- -D warnings
	$(CARGO) fmt --manifest-path firmware/qemu-node/Cargo.toml -- --check
	$(CARGO) clippy --release $(QEMU_NODE_MANIFEST) -- -D warnings
	$(CARGO) deny check --hide-inclusion-graph bans licenses sources
	@if $(CARGO) deny fetch >/dev/null 2>&1; then $(CARGO) deny check advisories; \
	else echo "lint: advisories NOT checked: the RustSec database (github.com/rustsec/advisory-db) cannot be fetched from here"; fi

## functions: build the example functions (and the test guests) to WebAssembly
functions: setup-run
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(FUNCTIONS) $(TEST_GUESTS))
	@ls -l $${CARGO_TARGET_DIR:-target}/$(WASM_TARGET)/release/*.wasm

## functions-c: build the C examples (functions/examples/c) with clang into target/wasm32-c:
## relay.wasm (plain C, no SDK), threshold.wasm (the C SDK, freestanding) and
## threshold-wasi.wasm (the C SDK with wasi-libc, a WASI reactor; WASI_SYSROOT for a wasi-sdk)
comma := ,
C_EXPORTS := $(addprefix -Wl$(comma)--export=,kiri_abi_version kiri_alloc kiri_on_event)
C_SDK := functions/sdk-c
C_WARNINGS := -Wall -Wextra -Werror
# Debian's clang 14 knows WASI preview 1 as wasm32-wasi (clang 18 and later also as
# wasm32-wasip1) and finds the wasi-libc package's sysroot itself.
WASI_TARGET ?= wasm32-wasi
WASI_SYSROOT ?=
WASI_CC := clang --target=$(WASI_TARGET) $(if $(WASI_SYSROOT),--sysroot=$(WASI_SYSROOT))
functions-c:
	@mkdir -p target/wasm32-c
	clang --target=wasm32 -nostdlib -O2 -mbulk-memory -Wl,--no-entry $(C_EXPORTS) \
		-o target/wasm32-c/relay.wasm functions/examples/c/relay.c
	clang --target=wasm32 -nostdlib -O2 $(C_WARNINGS) -I$(C_SDK) -Wl,--no-entry -Wl,--stack-first \
		-o target/wasm32-c/threshold.wasm functions/examples/c/threshold.c
	@crt=$$($(WASI_CC) -print-file-name=crt1-reactor.o); rt=$$($(WASI_CC) -print-libgcc-file-name); \
	if [ ! -e "$$crt" ] || [ ! -e "$$rt" ]; then \
		echo "functions-c: threshold-wasi.wasm needs wasi-libc and clang's wasm32 builtins" \
			"(Debian: wasi-libc, libclang-rt-dev-wasm32, which scripts/setup.sh test installs)," \
			"or WASI_SYSROOT=<wasi-sdk>/share/wasi-sysroot" >&2; exit 1; fi
	$(WASI_CC) -mexec-model=reactor -O2 $(C_WARNINGS) -I$(C_SDK) -Wl,--stack-first \
		-o target/wasm32-c/threshold-wasi.wasm functions/examples/c/threshold.c
	@ls -l target/wasm32-c/relay.wasm target/wasm32-c/threshold.wasm target/wasm32-c/threshold-wasi.wasm

## test-c-sdk: the C SDK's native tests (functions/sdk-c/test: its helpers, and the C threshold
## example against a mock host), built with cc (HOST_CC) plain and with ASan and UBSan; and a
## freestanding wasm32 link of code that makes clang call memcpy, memset, memcmp and friends
HOST_CC ?= cc
C_SDK_TEST_FLAGS := -std=c11 -O1 -g $(C_WARNINGS) -I$(C_SDK)
C_SDK_SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
test-c-sdk:
	@mkdir -p target/c-sdk-test
	$(HOST_CC) $(C_SDK_TEST_FLAGS) -o target/c-sdk-test/test_kiri \
		$(C_SDK)/test/test_kiri.c $(C_SDK)/test/mock_host.c -lm
	$(HOST_CC) $(C_SDK_TEST_FLAGS) $(C_SDK_SANITIZE) -o target/c-sdk-test/test_kiri-san \
		$(C_SDK)/test/test_kiri.c $(C_SDK)/test/mock_host.c -lm
	$(HOST_CC) $(C_SDK_TEST_FLAGS) -o target/c-sdk-test/test_threshold \
		$(C_SDK)/test/test_threshold.c functions/examples/c/threshold.c $(C_SDK)/test/mock_host.c
	$(HOST_CC) $(C_SDK_TEST_FLAGS) $(C_SDK_SANITIZE) -o target/c-sdk-test/test_threshold-san \
		$(C_SDK)/test/test_threshold.c functions/examples/c/threshold.c $(C_SDK)/test/mock_host.c
	clang --target=wasm32 -nostdlib -O2 $(C_WARNINGS) -I$(C_SDK) -Wl,--no-entry \
		-o target/c-sdk-test/libc-calls.wasm $(C_SDK)/test/libc_calls.c
	target/c-sdk-test/test_kiri
	target/c-sdk-test/test_kiri-san
	target/c-sdk-test/test_threshold
	target/c-sdk-test/test_threshold-san

## functions-wasi: build the WASI examples (Rust with std and serde) for wasm32-wasip1
functions-wasi: setup-run
	$(CARGO) build --release --target wasm32-wasip1 $(addprefix -p ,$(WASI_FUNCTIONS))
	@ls -l $${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/*.wasm

## functions-as: the AssemblyScript example (functions/examples/assemblyscript-threshold), built
## with the AssemblyScript SDK (functions/sdk-assemblyscript) to target/wasm32-as/threshold.wasm
## and checked against the ABI; the compiler comes from the lock file (`npm ci`, offline when
## npm's cache has it; installs Node.js and npm as root if missing)
AS_SDK := functions/sdk-assemblyscript
AS_THRESHOLD := functions/examples/assemblyscript-threshold
functions-as: setup-as $(AS_THRESHOLD)/node_modules/.kiri-npm-ci
	cd $(AS_THRESHOLD) && npm run --silent build
	@mkdir -p target/wasm32-as
	cp $(AS_THRESHOLD)/build/threshold.wasm target/wasm32-as/threshold.wasm
	node $(AS_SDK)/testing/check-module.mjs target/wasm32-as/threshold.wasm

## test-as-sdk: the AssemblyScript SDK's tests (CBOR, JSON, the ABI glue, abort, memory over many
## events) and the example's against target/wasm32-as/threshold.wasm, under Node.js
test-as-sdk: functions-as $(AS_SDK)/node_modules/.kiri-npm-ci
	cd $(AS_SDK) && npm test --silent
	cd $(AS_THRESHOLD) && THRESHOLD_WASM=$(CURDIR)/target/wasm32-as/threshold.wasm npm test --silent

# `npm ci` empties node_modules and installs exactly the lock file: run it again only when the
# lock file or package.json changed (the stamp is in node_modules, which it replaces).
%/node_modules/.kiri-npm-ci: %/package-lock.json %/package.json
	cd $* && npm ci --no-audit --no-fund --prefer-offline --loglevel=error
	@touch $@

## firmware: the sensor drivers and node core for Cortex-M4F and Cortex-M3 (no_std), and the
## node for QEMU's Cortex-M3 board
FIRMWARE_CRATES := -p kiri-reading -p kiri-drivers -p kiri-node
firmware: qemu-node-build
	$(CARGO) build $(FIRMWARE_CRATES) --target thumbv7em-none-eabihf
	$(CARGO) build $(FIRMWARE_CRATES) --target thumbv7m-none-eabi

QEMU_NODE_MANIFEST := --manifest-path firmware/qemu-node/Cargo.toml --target thumbv7m-none-eabi --target-dir target
qemu-node-build:
	$(CARGO) build --release $(QEMU_NODE_MANIFEST)

## qemu-node: run the Cortex-M3 node under qemu-system-arm, its UART on 127.0.0.1:$(NODE_PORT),
## and kiri-sensor publishing its readings to the broker on $(BROKER_PORT) (start `make run` first)
NODE_PORT ?= 5555
BROKER_PORT ?= 1883
qemu-node: qemu-node-build
	$(CARGO) build --release -p kiri-sensor
	@qemu-system-arm -cpu cortex-m3 -machine lm3s6965evb -nographic -monitor none \
		-serial tcp:127.0.0.1:$(NODE_PORT),server=on,wait=on \
		-kernel target/thumbv7m-none-eabi/release/kiri-qemu-node & qemu=$$!; \
	trap 'kill $$qemu 2>/dev/null' EXIT INT TERM; \
	./target/release/kiri-sensor --source tcp:127.0.0.1:$(NODE_PORT) --port $(BROKER_PORT) \
		--client-id kiri-sensor-qemu

## sensor: the kiri-sensor agent (debug)
sensor:
	$(CARGO) build -p kiri-sensor

## cross: kiri and kiri-sensor for the devices (release, stripped copies in target/cross/),
## sizes reported: CROSS_TARGETS (default aarch64 musl, armv7 gnueabihf, aarch64 gnu)
CROSS_TARGETS ?= aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf aarch64-unknown-linux-gnu
cross: assets
	cross/build.sh $(CROSS_TARGETS)

## image: the simulated board's kernel and initramfs (target/image), with the static kiri
image: assets functions
	cross/build.sh aarch64-unknown-linux-musl
	cross/image.sh

## qemu: boot the simulated board (console here; type `halt` to stop it). It reaches the host's
## site broker on LOCAL_PORT and cloud on CLOUD_PORT; its dashboard is on 127.0.0.1:DASH_PORT.
## Knobs: QEMU_MEM, QEMU_CPUS, QEMU_UPLINK=broken, QEMU_DISK_MB, QEMU_CLOCK (see cross/qemu.sh)
qemu: image
	cross/qemu.sh

## deb: Debian packages for arm64 and armhf in target/deb (DEB_ARCHES to choose)
DEB_ARCHES ?= arm64 armhf
deb: assets functions
	cross/build.sh $(foreach a,$(DEB_ARCHES),$(if $(filter arm64,$(a)),aarch64-unknown-linux-musl,armv7-unknown-linux-gnueabihf))
	cross/deb.sh $(DEB_ARCHES)

## install: copy the package to HOST (user@device) over ssh and install it (ARCH=arm64|armhf)
ARCH ?= arm64
install: DEB_ARCHES = $(ARCH)
install: deb
	@test -n "$(HOST)" || { echo "make install HOST=user@device [ARCH=arm64|armhf]"; exit 2; }
	scp target/deb/kiri_*_$(ARCH).deb $(HOST):/tmp/
	ssh -t $(HOST) 'sudo apt-get install -y /tmp/kiri_*_$(ARCH).deb && rm -f /tmp/kiri_*_$(ARCH).deb'

## sd-image: a bootable arm64 SD card image for the Raspberry Pi 3, 4 and Zero 2 W, from Debian 12
## packages, with Kiri installed (target/sd-image/kiri-sd-arm64.img.xz). As root, with the network
## to deb.debian.org; about 30 minutes on 2 cores. See docs/devices.md
sd-image: assets functions
	cross/build.sh aarch64-unknown-linux-musl
	cross/deb.sh arm64
	cross/sdimage.sh

## sd-image-boot: boot the SD image (after make sd-image) under qemu-system-aarch64 and check its
## first boot, that Kiri runs as a service and forwards a reading (several minutes)
sd-image-boot:
	cross/sdimage-boot.sh

## flash: write IMAGE to the removable DEVICE (DRY_RUN=1 only checks and prints)
flash:
	@test -n "$(IMAGE)" -a -n "$(DEVICE)" || { echo "make flash IMAGE=file.img DEVICE=/dev/sdX [DRY_RUN=1]"; exit 2; }
	cross/flash.sh "$(IMAGE)" "$(DEVICE)"

## build: the kiri binary (debug)
build: assets
	$(CARGO) build -p kiri

## assets: the dashboard's vendored files (uPlot, sha512 pinned) into gateway/assets/vendor;
## every target that compiles the gateway depends on it
assets:
	@scripts/fetch-assets.sh

setup-run:
	@scripts/setup.sh run

setup-test:
	@scripts/setup.sh test

setup-lint:
	@scripts/setup.sh lint

setup-fuzz:
	@scripts/setup.sh fuzz

setup-as:
	@scripts/setup.sh as

clean:
	$(CARGO) clean
