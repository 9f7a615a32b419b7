#!/usr/bin/env bash
# Fuzzes the token decoder, sealing round trips, the Cookie/token-header request and response
# path, and the configuration parser.
#   scripts/fuzz.sh smoke           # ~15 s per target (part of CI)
#   scripts/fuzz.sh long [RUNS]     # RUNS executions per target (default 10,000,000)
#   scripts/fuzz.sh corpus [SECS]   # grow the committed corpus for SECS per target, then minimise it
# Needs the nightly toolchain and cargo-fuzz (installed here if missing). Crashes are
# written to fuzz/artifacts/<target>/ and fail the run.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
mode="${1:-smoke}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --version 0.13.2 --locked
targets=(token_open token_roundtrip cookie_header config_load)
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target"
  case "$mode" in
    smoke) args=(-max_total_time=15) ;;
    long) args=(-runs="${2:-10000000}") ;;
    corpus)
      cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="${2:-60}" -max_len=2048 2>&1 | grep -E "^Done" || true
      cargo +nightly fuzz cmin "$target" "corpus/$target" 2>&1 | grep -E "MERGE-OUTER: [0-9]+ new files" || true
      echo "corpus/$target: $(ls "corpus/$target" | wc -l) files"
      continue ;;
    *) echo "usage: $0 smoke|long [RUNS]|corpus [SECS]" >&2; exit 2 ;;
  esac
  echo "== fuzz $target (${args[*]})"
  # New finds go to a scratch corpus, so the committed seed corpus stays small.
  scratch="$(mktemp -d)"
  # With pipefail the pipeline fails when the fuzzer does (grep's own status is ignored).
  if cargo +nightly fuzz run "$target" "$scratch" "corpus/$target" -- "${args[@]}" -print_final_stats=1 2>&1 \
    | { grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)|ERROR|panicked|SUMMARY|==[0-9]+==" || true; }
  then status=0; else status=$?; fi
  rm -rf "$scratch"
  if [[ "$status" -ne 0 ]]; then
    echo "fuzz target $target FAILED (exit $status); see fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
