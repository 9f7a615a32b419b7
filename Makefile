# tether — the two commands users need are `make run` and `make test`.
SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/tether.wasm

.PHONY: bench build build-native build-native-1.39 native-image push-native envoy-gateway-native istio-native run-native test-native build-crash-test test unit integration lint run envoy wasm-target clean size fuzz-smoke fuzz-long image push istio test-matrix istio-render envoy-gateway change cli probe tools browser-tools mcp-tools test-browser

## build: the release .wasm at target/wasm32-wasip1/release/tether.wasm
build: wasm-target
	cargo build --release --target $(WASM_TARGET)
	@ls -l $(WASM) | awk '{print "built $(WASM): " $$5 " bytes"}'

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

## build-native: the native build, an Envoy dynamic module, at target/native/libtether.so,
## for Envoy 1.40 (run it with envoy/native.yaml: `make run-native`); for Envoy 1.39:
## `make build-native ENVOY_VERSION=1.39.3` (docs/native.md)
build-native:
	ENVOY_VERSION=$(or $(ENVOY_VERSION),1.40.0) cargo build --profile native --features native --lib
	@ls -l target/native/libtether.so | awk '{print "built target/native/libtether.so for Envoy $(or $(ENVOY_VERSION),1.40.0): " $$5 " bytes"}'

# The build for Envoy 1.39 beside the default one, for the version matrix.
NATIVE_1_39 := target/envoy-1.39/native/libtether.so
build-native-1.39:
	ENVOY_VERSION=1.39.3 cargo build --profile native --features native --lib --target-dir target/envoy-1.39

## build-crash-test: a test-only module that panics on request (tests of failure policies)
build-crash-test: wasm-target
	cargo build --release --target $(WASM_TARGET) --features crash-test --target-dir target/crash-test
	ENVOY_VERSION=1.40.0 cargo build --profile native --features native,crash-test --lib --target-dir target/crash-test

## envoy: print (and install if needed) the Envoy binary the tests use
envoy:
	@scripts/envoy.sh

## tools: what the tests need besides Rust and Envoy (skopeo for the image tests; qemu-user
## to run the native image's arm64 module in arm64 Envoy; Chromium and Playwright for the
## browser tests; the MCP Python SDK for tests/mcp.rs)
tools: browser-tools mcp-tools
	@command -v skopeo >/dev/null || { echo "installing skopeo (Debian package)"; apt-get update -qq && apt-get install -y -qq skopeo; }
	@command -v qemu-aarch64 >/dev/null || { echo "installing qemu-user (Debian package)"; apt-get update -qq && apt-get install -y -qq qemu-user; }

## browser-tools: Debian's chromium (apt-get) and Playwright, pinned, in .tools/browser-venv
browser-tools:
	@scripts/browser.sh >/dev/null

## mcp-tools: the MCP Python SDK (and httpx2 with HTTP/2), pinned, in .tools/mcp-venv
mcp-tools:
	@scripts/mcp.sh >/dev/null

# The browser suite: headless Chromium through real Envoy and the demo pods (~70 s).
browser_tests = set -o pipefail; ENVOY="$$(scripts/envoy.sh)" "$$(scripts/browser.sh)" \
	  tests/browser/browser_test.py $(1) 2>&1 | tee target/test-browser.log

# Every test step keeps the test run's exit status (pipefail through tee; the summary
# line is printed after it and does not replace it), so a failure fails the target.
# The shared integration tests that `make test` also runs against the native build
# (TETHER_BUILD=native); the misordered-chain test is about stateful_session, which the
# native build does not use, and replicas.rs's Istio case runs the rendered wasm
# configuration whatever the build.
NATIVE_TESTS := affinity failover hardening config operations review change replicas mcp
native_run = cargo test --release $(addprefix --test ,$(1)) -- --test-threads=2 \
	  --skip troubleshooting_stateful_session --skip istio_cookie_mode
native_tests = set -o pipefail; TETHER_BUILD=native ENVOY="$$(scripts/envoy.sh)" $(call native_run,$(NATIVE_TESTS)) \
	  2>&1 | tee target/test-native.log; status=$$?; \
	awk '/^test result:/ {p+=$$4; f+=$$6} END {printf "native build: %d passed, %d failed\n", p, f}' target/test-native.log; \
	exit $$status

## test: lints, native unit tests, and integration tests against real Envoy, for the wasm
## module and (the shared suite's core, and tests/native.rs) the native build
test: tools lint build build-native build-native-1.39 build-crash-test native-image
	@mkdir -p target
	set -o pipefail; ENVOY="$$(scripts/envoy.sh)" cargo test --release --workspace -- --test-threads=2 \
	  2>&1 | tee target/test.log
	@awk '/^test result:/ {p+=$$4; f+=$$6} END {printf "tests: %d passed, %d failed\n", p, f}' target/test.log
	$(call native_tests)
	$(call browser_tests)

## test-native: the shared suite's core against the native build alone (also part of `make test`)
test-native: build-native build-crash-test
	@mkdir -p target
	$(call native_tests)

## run-native: three demo pods and Envoy with envoy/native.yaml and the native module
run-native: build-native
	TETHER_BUILD=native ENVOY="$$(scripts/envoy.sh)" scripts/run-demo.sh

## test-browser: the browser suite alone (also part of `make test`); one test: make
## test-browser T=test_header_mode_from_a_page_script
test-browser: browser-tools build
	@mkdir -p target
	$(call browser_tests,$(if $(T),-k $(T)))

## unit: the fast native unit tests only
unit:
	cargo test --release --lib

lint: wasm-target
	cargo fmt --all --check
	cargo clippy --release --target $(WASM_TARGET) -- -D warnings
	cargo clippy --release --workspace --all-targets -- -D warnings
	cargo clippy --profile native --features native --lib -- -D warnings

## run: three demo pods and Envoy on 127.0.0.1:10000 (Ctrl-C stops all)
run: build
	ENVOY="$$(scripts/envoy.sh)" scripts/run-demo.sh

## fuzz-smoke: ~15 s of fuzzing per target (token decoding, seal/open round trips, the cookie/header request and response path, configuration)
fuzz-smoke:
	scripts/fuzz.sh smoke

## fuzz-long: 10,000,000 executions per target
fuzz-long:
	scripts/fuzz.sh long 10000000

## change: the behaviour-under-change tests with their figures (README "Behaviour under change")
change: build
	ENVOY="$$(scripts/envoy.sh)" cargo test --release --test change -- --test-threads=1 --nocapture

## cli: the operator command at target/release/tether (doctor, probe, keygen, token inspect)
cli:
	cargo build --release -p tether-cli
	@echo "built target/release/tether (try: target/release/tether doctor --config envoy/envoy.yaml)"

## probe: the same command (`tether probe` replaced tether-probe)
probe: cli

## bench: tether against Envoy's own affinity options, same run (not part of `make test`)
bench: build build-native build-native-1.39
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	cargo build --release -p tether-bench
	cd bench/empty-filter && cargo build --release --target $(WASM_TARGET)
	cd bench/empty-native && cargo build --release
	cargo build --release --target $(WASM_TARGET) --features bench-diag --target-dir target/bench-diag
	cargo bench --bench codec
	python3 scripts/bench.py

SIZE_LIMIT := 286720
## size: the release .wasm (and its wasm-opt -Oz form, for reference); fails past 280 KB.
## What users feel is memory, not module size: `make bench` reports Envoy's RSS on 2 workers.
size: build
	@command -v wasm-opt >/dev/null || (apt-get update -qq && apt-get install -y -qq binaryen)
	wasm-opt -Oz --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
	  --enable-nontrapping-float-to-int $(WASM) -o target/tether.opt.wasm
	@raw=$$(stat -c %s $(WASM)); opt=$$(stat -c %s target/tether.opt.wasm); \
	  echo "tether.wasm: $$raw bytes (limit $(SIZE_LIMIT)); after wasm-opt -Oz: $$opt bytes"; \
	  test $$raw -le $(SIZE_LIMIT) || { echo "tether.wasm is past the 280 KB limit"; exit 1; }

clean:
	cargo clean

## image: the .wasm as an OCI image layout in target/oci; prints the digest for WasmPlugin
image: build
	python3 scripts/oci.py build $(WASM) target/oci

## push IMAGE=registry/repo:tag: pushes target/oci with skopeo (your `skopeo login`
## credentials, TLS verified unless TLS_VERIFY=false); prints the digest
push: image
	@test -n "$(IMAGE)" || { echo "usage: make push IMAGE=registry/repo:tag [TLS_VERIFY=false]"; exit 2; }
	TLS_VERIFY=$(or $(TLS_VERIFY),true) scripts/push.sh $(IMAGE) target/oci

## native-image: the native module as an OCI image for linux/amd64 and linux/arm64 in
## target/oci-native (/libtether.so, needing only glibc <= 2.36, and /install, which copies
## it into a directory: an init container's job), built for Envoy 1.39 (ENVOY_VERSION=1.40.0
## for 1.40)
native-image:
	scripts/native-image.sh

## push-native IMAGE=registry/repo:tag: pushes target/oci-native, every platform (skopeo)
push-native: native-image
	@test -n "$(IMAGE)" || { echo "usage: make push-native IMAGE=registry/repo:tag [TLS_VERIFY=false]"; exit 2; }
	TLS_VERIFY=$(or $(TLS_VERIFY),true) scripts/push.sh $(IMAGE) target/oci-native

## envoy-gateway-native IMAGE=registry/repo:tag: envoy-gateway/native/ in target/envoy-gateway-native
## with the init container's image pinned to the digest of what `make native-image` built
envoy-gateway-native: native-image
	@test -n "$(IMAGE)" || { echo "usage: make envoy-gateway-native IMAGE=registry/repo:tag"; exit 2; }
	python3 scripts/envoy-gateway-render.py --pin "$(IMAGE)" --layout target/oci-native \
	  --manifests envoy-gateway/native --out target/envoy-gateway-native

## istio IMAGE=registry/repo:tag: ready-to-apply manifests in target/istio/, each WasmPlugin
## pinned to the digest of the image `make image` built (kubectl apply -k target/istio)
istio: image
	@test -n "$(IMAGE)" || { echo "usage: make istio IMAGE=registry/repo:tag"; exit 2; }
	rm -rf target/istio
	python3 scripts/istio-manifests.py --image $(IMAGE) --digest $$(python3 scripts/oci.py digest target/oci) --out target/istio

## istio-native IMAGE=registry/repo:tag: istio/native/ (the native build's gateway recipe) in
## target/istio-native with its init container's image pinned to what `make native-image` built
istio-native: native-image
	@test -n "$(IMAGE)" || { echo "usage: make istio-native IMAGE=registry/repo:tag"; exit 2; }
	rm -rf target/istio-native
	python3 scripts/istio-manifests.py --native-image $(IMAGE) --digest $$(python3 scripts/oci.py digest target/oci-native) --out target/istio-native

## istio-render: what istiod would send for istio/ (target/istio-{gateway,sidecar,gateway-api}/)
istio-render:
	python3 scripts/istio-render.py --plugin istio/wasmplugin-gateway.yaml --out target/istio-gateway
	python3 scripts/istio-render.py --plugin istio/wasmplugin-sidecar.yaml --out target/istio-sidecar
	python3 scripts/istio-render.py --plugin istio/wasmplugin-gateway-api.yaml --out target/istio-gateway-api

## envoy-gateway: ready-to-apply Envoy Gateway manifests in target/envoy-gateway/, the
## EnvoyExtensionPolicy pinned to the digest of the image `make image` builds
## (usage: make envoy-gateway IMAGE=registry/repo:tag; then push target/oci to IMAGE)
ifneq ($(filter envoy-gateway,$(MAKECMDGOALS)),)
ifeq ($(IMAGE),)
$(error usage: make envoy-gateway IMAGE=registry/repo:tag)
endif
endif
envoy-gateway: image
	python3 scripts/envoy-gateway-render.py --pin "$(IMAGE)" --layout target/oci \
	  --manifests envoy-gateway --out target/envoy-gateway

## test-matrix: the integration tests (all but the fixed-port demo) on every pinned Envoy;
## prints, per version, how many of those tests passed and failed, and fails unless all did.
## Native: which build (for 1.40, for 1.39) loads on which Envoy, and the shared native
## suite on each Envoy that runs the native build (1.39, 1.40), with the build for it.
MATRIX_TESTS := $(filter-out demo native,$(basename $(notdir $(wildcard tests/*.rs))))
MATRIX_COUNT := $(shell cat $(addprefix tests/,$(addsuffix .rs,$(MATRIX_TESTS))) | grep -c '^\#\[test\]')
test-matrix: tools build build-native build-native-1.39 build-crash-test native-image
	@set -e; for v in $$(scripts/envoy.sh --pinned); do \
	  envoy="$$(ENVOY_VERSION=$$v scripts/envoy.sh)"; \
	  echo "=== Envoy $$v: $$($$envoy --version | grep -o 'version: [^ ]*')"; \
	  ENVOY="$$envoy" cargo test --release $(addprefix --test ,$(MATRIX_TESTS)) -- --test-threads=2 --nocapture \
	    > target/matrix-$$v.log 2>&1 && echo "Envoy $$v: pass" || { echo "Envoy $$v: FAIL (target/matrix-$$v.log)"; failed="$$failed $$v"; }; \
	  grep '^test result' target/matrix-$$v.log | awk -v v=$$v -v n=$(MATRIX_COUNT) \
	    '{p+=$$4; f+=$$6; i+=$$8} END {print "envoy-" v ": " p " passed, " f " failed, " i " ignored, of " n " tests"; exit !(p + i == n && f == 0)}' \
	    || failed="$$failed $$v"; \
	  for m in target/native/libtether.so $(NATIVE_1_39); do \
	    ENVOY="$$envoy" TETHER_NATIVE_MODULE=$$m cargo test --release --test native abi_check_of_this_envoy -- --ignored --nocapture \
	      > target/matrix-load-$$v.log 2>&1 || failed="$$failed $$v(loading $$m)"; \
	    grep '^Envoy ' target/matrix-load-$$v.log || true; \
	  done; \
	  case $$v in 1.39.*) m=$(NATIVE_1_39);; 1.40.*) m=target/native/libtether.so;; *) continue;; esac; \
	  TETHER_BUILD=native TETHER_NATIVE_MODULE=$$m ENVOY="$$envoy" $(call native_run,$(NATIVE_TESTS) native) \
	    > target/matrix-native-$$v.log 2>&1 || failed="$$failed $$v(native)"; \
	  grep '^test result' target/matrix-native-$$v.log | awk -v v=$$v -v m=$$m \
	    '{p+=$$4; f+=$$6} END {print "envoy-" v " native (" m "): " p " passed, " f " failed"}'; \
	done; [ -z "$$failed" ] || { echo "failed on:$$failed"; exit 1; }
