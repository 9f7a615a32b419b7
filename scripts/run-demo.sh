#!/usr/bin/env bash
# Starts three demo pods on 127.0.0.1:8081-8083 and Envoy with envoy/envoy.yaml in the
# foreground (with envoy/native.yaml and the native module when TETHER_BUILD=native).
# Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY="${ENVOY:-$(scripts/envoy.sh)}"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for port in 8081 8082 8083; do
  python3 demo/pod.py --name "pod-$port" --port "$port" &
  pids+=($!)
done

cat <<'MSG'

Envoy with tether on http://127.0.0.1:10000 (admin http://127.0.0.1:9901). Try:

  curl -si -c /tmp/jar http://127.0.0.1:10000/      # new session: Set-Cookie, x-pod
  curl -si -b /tmp/jar http://127.0.0.1:10000/      # same x-pod every time, no Set-Cookie
  kill one pod (pkill -f 'pod.py --name pod-8081') and watch its sessions re-pin

MSG
config=envoy/envoy.yaml
if [ "${TETHER_BUILD:-wasm}" = native ]; then
  config=envoy/native.yaml
fi
"$ENVOY" -c "$config" --disable-hot-restart --log-level warn \
  --component-log-level wasm:info,dynamic_modules:info &
envoy_pid=$!
pids+=("$envoy_pid")
# Runs until Envoy exits (or Ctrl-C). Not `wait -n` on every process: killing a pod is
# part of the demo, and must not stop it.
wait "$envoy_pid"
