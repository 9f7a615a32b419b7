# tether — the two commands users need are `make run` and `make test`.
SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/tether.wasm

.PHONY: build test unit integration lint run envoy wasm-target clean size change probe

## build: the release .wasm at target/wasm32-wasip1/release/tether.wasm
build: wasm-target
	cargo build --release --target $(WASM_TARGET)
	@ls -l $(WASM) | awk '{print "built $(WASM): " $$5 " bytes"}'

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

## envoy: print (and install if needed) the Envoy binary the tests use
envoy:
	@scripts/envoy.sh

## test: lints, native unit tests, and integration tests against real Envoy
test: lint build
	ENVOY="$$(scripts/envoy.sh)" cargo test --release --workspace -- --test-threads=2

## unit: the fast native unit tests only
unit:
	cargo test --release --lib

lint: wasm-target
	cargo fmt --all --check
	cargo clippy --release --target $(WASM_TARGET) -- -D warnings
	cargo clippy --release --workspace --all-targets -- -D warnings

## run: three demo pods and Envoy on 127.0.0.1:10000 (Ctrl-C stops all)
run: build
	ENVOY="$$(scripts/envoy.sh)" scripts/run-demo.sh

## change: the behaviour-under-change tests with their figures (README "Behaviour under change")
change: build
	ENVOY="$$(scripts/envoy.sh)" cargo test --release --test change -- --test-threads=1 --nocapture

## probe: the tether-probe command-line tool at target/release/tether-probe
probe:
	cargo build --release -p tether-probe
	@echo "built target/release/tether-probe (try: target/release/tether-probe --help)"

size: build
	@ls -l $(WASM) | awk '{print $$5 " bytes"}'

clean:
	cargo clean
