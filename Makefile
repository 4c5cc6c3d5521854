# Kiri. Quick start: `make run` (a gateway with the example functions), `make test`.
CARGO ?= cargo
CONFIG ?= kiri.example.toml
WASM_TARGET := wasm32-unknown-unknown
FUNCTIONS := kiri-fn-threshold kiri-fn-convert kiri-fn-average kiri-fn-window kiri-fn-zscore

.PHONY: run test soak lint functions functions-c build assets setup-run setup-test clean

## run: build the gateway (release) and the example functions, start it with $(CONFIG); prints
## the dashboard's address with its token
run: setup-run assets functions
	$(CARGO) build --release -p kiri
	@./target/release/kiri dashboard --config $(CONFIG)
	./target/release/kiri run --config $(CONFIG)

## test: unit, property, end-to-end and browser tests (installs Mosquitto, clang, lld, Chromium
## and chromedriver as root if missing)
test: setup-test assets functions functions-c
	@scripts/test.sh

## soak: the delivery proofs, longer: a crash loop of SOAK_KILLS SIGKILLs over SOAK_EVENTS
## readings, and SOAK_MODEL_CASES random sequences of the outbox model check
SOAK_KILLS ?= 40
SOAK_EVENTS ?= 40000
SOAK_MODEL_CASES ?= 5000
soak: setup-test assets functions
	TEST_MODEL_CASES=$(SOAK_MODEL_CASES) $(CARGO) test -p kiri --lib the_outbox_matches_its_model
	TEST_CRASH_KILLS=$(SOAK_KILLS) TEST_CRASH_EVENTS=$(SOAK_EVENTS) \
		$(CARGO) test -p kiri --test e2e -- --nocapture crash_loop link_faults

## lint: formatting and clippy, for the host and for the wasm guests
lint: setup-run assets
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(addprefix -p ,$(FUNCTIONS) kiri-sdk) -- -D warnings

## functions: build the example functions to WebAssembly
functions: setup-run
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(FUNCTIONS))
	@ls -l target/$(WASM_TARGET)/release/*.wasm

## functions-c: build the C example (functions/examples/c) with clang to wasm32
comma := ,
C_EXPORTS := $(addprefix -Wl$(comma)--export=,kiri_abi_version kiri_alloc kiri_on_event)
functions-c:
	@mkdir -p target/wasm32-c
	clang --target=wasm32 -nostdlib -O2 -mbulk-memory -Wl,--no-entry $(C_EXPORTS) \
		-o target/wasm32-c/relay.wasm functions/examples/c/relay.c
	@ls -l target/wasm32-c/relay.wasm

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

clean:
	$(CARGO) clean
