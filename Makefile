# tether — the two commands users need are `make run` and `make test`.
SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/tether.wasm

.PHONY: build test unit integration lint run envoy wasm-target clean size fuzz-smoke fuzz-long

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
	ENVOY="$$(scripts/envoy.sh)" cargo test --release -- --test-threads=2

## unit: the fast native unit tests only
unit:
	cargo test --release --lib

lint: wasm-target
	cargo fmt --check
	cargo clippy --release --target $(WASM_TARGET) -- -D warnings
	cargo clippy --release --all-targets -- -D warnings

## run: three demo pods and Envoy on 127.0.0.1:10000 (Ctrl-C stops all)
run: build
	ENVOY="$$(scripts/envoy.sh)" scripts/run-demo.sh

## fuzz-smoke: ~15 s of fuzzing per target (token, cookie/header parsing, configuration)
fuzz-smoke:
	scripts/fuzz.sh smoke

## fuzz-long: 10,000,000 executions per target
fuzz-long:
	scripts/fuzz.sh long 10000000

size: build
	@ls -l $(WASM) | awk '{print $$5 " bytes"}'

clean:
	cargo clean
