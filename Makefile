# Kiri. Quick start: `make run` (a gateway with the example functions), `make test`.
CARGO ?= cargo
CONFIG ?= kiri.example.toml
WASM_TARGET := wasm32-unknown-unknown
FUNCTIONS := kiri-fn-threshold kiri-fn-convert kiri-fn-average kiri-fn-window

.PHONY: run test lint functions build setup-run setup-test clean

## run: build the gateway (release) and the example functions, start it with $(CONFIG)
run: setup-run functions
	$(CARGO) build --release -p kiri
	./target/release/kiri run --config $(CONFIG)

## test: unit, property and end-to-end tests (installs Mosquitto as root if missing)
test: setup-test functions
	@scripts/test.sh

## lint: formatting and clippy, for the host and for the wasm guests
lint: setup-run
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(addprefix -p ,$(FUNCTIONS) kiri-sdk) -- -D warnings

## functions: build the example functions to WebAssembly
functions: setup-run
	$(CARGO) build --release --target $(WASM_TARGET) $(addprefix -p ,$(FUNCTIONS))
	@ls -l target/$(WASM_TARGET)/release/*.wasm

## build: the kiri binary (debug)
build:
	$(CARGO) build -p kiri

setup-run:
	@scripts/setup.sh run

setup-test:
	@scripts/setup.sh test

clean:
	$(CARGO) clean
