#!/usr/bin/env python3
"""make bench: tether against Envoy's own options, in one run, on this machine.

Envoy runs with --concurrency 1 pinned to CPU 0; wrk and a fast upstream share CPU 1.
Every configuration uses the same listener, cluster (3 upstream ports) and access-log-free
HTTP connection manager, derived from envoy/envoy.yaml. Rounds alternate the
configurations so drift on this shared machine hits all of them alike; each run starts a
fresh Envoy, warms up (discarded), then measures. Figures are medians over rounds.

Writes target/bench/summary.json and target/bench/chart.svg, prints a table.
Also measures Envoy's memory before and after N distinct new sessions (--sessions).
"""
import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# BENCH_TETHER_WASM / BENCH_DIAG_WASM: bench another build of the module (variants side by side).
TETHER_WASM = os.environ.get("BENCH_TETHER_WASM") or os.path.join(ROOT, "target/wasm32-wasip1/release/tether.wasm")
# The same module built with feature bench-diag (make bench builds it): extra token work on demand.
DIAG_WASM = os.environ.get("BENCH_DIAG_WASM") or os.path.join(ROOT, "target/bench-diag/wasm32-wasip1/release/tether.wasm")
EMPTY_WASM = os.path.join(ROOT, "bench/empty-filter/target/wasm32-wasip1/release/empty_filter.wasm")
UPSTREAM = os.path.join(ROOT, "target/release/bench-upstream")
NATIVE_MODULE = os.environ.get("BENCH_NATIVE_MODULE") or os.path.join(ROOT, "target/native/libtether.so")
# The native build for Envoy 1.39 (make build-native-1.39), for the `@1.39` configurations.
NATIVE_MODULE_1_39 = os.path.join(ROOT, "target/envoy-1.39/native/libtether.so")
# Configurations run again on Envoy 1.39 (the release Envoy Gateway v1.9 and Istio 1.31
# ship) with the build for it, compared with that Envoy's own baselines in the same run.
ON_1_39 = ("no_affinity@1.39", "native_cookie@1.39", "native_hit@1.39")
# A dynamic module that does nothing: the floor any native filter pays.
EMPTY_NATIVE = os.path.join(ROOT, "bench/empty-native/target/release/libempty_native.so")
PORTS = {"listener": 17000, "admin": 17001, "pods": [17081, 17082, 17083]}
# The empty filter doing exactly one kind of host call N times per request and nothing else
# (bench/empty-filter/src/lib.rs): (cost - wasm_empty) / N prices one call.
DIAG_EMPTY = {
    "diag_wasm_sets_two_headers": "set-two-headers",
    "diag_wasm_reads_two_properties": "read-two-properties",
    "diag_header_read_x10": "header-read:10",
    "diag_header_read_missing_x10": "header-read-missing:10",
    "diag_header_write_x10": "header-write:10",
    "diag_header_remove_x10": "response-header-remove:10",
    "diag_property_x10": "property:10",
    "diag_clock_x10": "clock:10",
    "diag_metric_x10": "metric:10",
}
CONFIGS = ["no_affinity", "wasm_empty", "native_cookie", "ring_hash_cookie", "tether_hit", "tether_mint",
           "native_empty", "native_hit", "native_mint", "diag_native_callbacks", "tether_hit_encrypted", "tether_hit_cookie_mode", "diag_tether_no_session_filter",
           "tether_hit_access_log", "native_hit_access_log", *ON_1_39,
           "diag_tether_token_x10"] + list(DIAG_EMPTY)
DESCRIPTIONS = {
    "no_affinity@1.39": "no_affinity on Envoy 1.39.3",
    "native_cookie@1.39": "native_cookie on Envoy 1.39.3",
    "native_hit@1.39": "native_hit on Envoy 1.39.3, with the build for 1.39",
    "no_affinity": "same listener and cluster, no affinity filter",
    "wasm_empty": "a wasm filter that does nothing (the floor any wasm filter pays)",
    "native_cookie": "Envoy's stateful_session cookie extension (unsigned)",
    "ring_hash_cookie": "Envoy's ring-hash hash_policy cookie with ttl",
    "tether_hit": "tether with a valid cookie on every request",
    "tether_mint": "tether with no cookie (mints each time)",
    "native_empty": "a dynamic module that does nothing (the floor any native filter pays)",
    "diag_native_callbacks": "diagnostic: the empty dynamic module making only the calls native affinity needs (read cookie, set hash header, set override host; read upstream address)",
    "native_hit": "tether's native build (dynamic module, envoy/native.yaml) with a valid cookie on every request",
    "native_mint": "tether's native build with no cookie (mints each time)",
    "tether_hit_encrypted": "tether, tokenFormat Encrypted, valid cookie on every request",
    "tether_hit_access_log": "tether_hit with accessLog on (the decision and session hash written to filter state)",
    "native_hit_access_log": "native_hit with accessLog on",
    "diag_tether_no_session_filter": "diagnostic, not a working setup: tether_hit without stateful_session",
    "diag_wasm_sets_two_headers": "diagnostic: the empty filter setting two request headers, nothing else",
    "diag_wasm_reads_two_properties": "diagnostic: the empty filter reading xds.cluster_name and upstream.address",
    "tether_hit_cookie_mode": "tether in Istio cookie mode (hostCookie, cookie session state), valid cookie",
    "diag_tether_token_x10": "diagnostic: tether_hit verifying its token 10 more times per request (bench-diag build)",
    "diag_header_read_x10": "diagnostic: the empty filter reading the Cookie request header 10 times",
    "diag_header_read_missing_x10": "diagnostic: the empty filter reading an absent request header 10 times",
    "diag_header_write_x10": "diagnostic: the empty filter setting a request header 10 times",
    "diag_header_remove_x10": "diagnostic: the empty filter removing an absent response header 10 times",
    "diag_property_x10": "diagnostic: the empty filter reading property xds.cluster_name 10 times",
    "diag_clock_x10": "diagnostic: the empty filter reading the clock 10 times",
    "diag_metric_x10": "diagnostic: the empty filter incrementing a counter 10 times",
}
EMPTY_LIKE = ("wasm_empty",) + tuple(DIAG_EMPTY)
NATIVE_LIKE = ("native_empty", "native_hit", "native_mint", "diag_native_callbacks", "native_hit_access_log")


def block(text, start, end):
    a = text.index(start)
    b = text.index(end, a)
    return a, b


def base_name(name):
    """The configuration a `name@1.39` one runs (on Envoy 1.39)."""
    return name.split("@")[0]


def envoy_config(name):
    """envoy/envoy.yaml adapted to one benchmark configuration."""
    native_module = NATIVE_MODULE_1_39 if name.endswith("@1.39") else NATIVE_MODULE
    name = base_name(name)
    y = open(os.path.join(ROOT, "envoy/envoy.yaml")).read()
    y = y.replace("port_value: 10000", f"port_value: {PORTS['listener']}")
    y = y.replace("port_value: 9901", f"port_value: {PORTS['admin']}")
    for old, new in zip([8081, 8082, 8083], PORTS["pods"]):
        y = y.replace(f"port_value: {old} ", f"port_value: {new} ")
    y = y.replace(TETHER_WASM_REL, TETHER_WASM)
    a, b = block(y, "          access_log:\n", "          route_config:\n")
    y = y[:a] + y[b:]  # no access log: it would cost the same everywhere and add noise
    tether_at, session_at = y.index("          - name: tether\n"), y.index("          - name: envoy.filters.http.stateful_session\n")
    router_at = y.index("          - name: envoy.filters.http.router\n")
    tether, session = y[tether_at:session_at], y[session_at:router_at]
    if name in ("no_affinity", "ring_hash_cookie", "native_cookie") + EMPTY_LIKE:
        y = y.replace(tether + session, "")
    if name == "diag_tether_no_session_filter":
        y = y.replace(tether + session, tether)
    if name in NATIVE_LIKE:
        # envoy/native.yaml's filter (the module sets the override host: no stateful_session).
        n = open(os.path.join(ROOT, "envoy/native.yaml")).read()
        module = n[n.index("          - name: tether\n"):n.index("          - name: envoy.filters.http.router\n")]
        empty = name in ("native_empty", "diag_native_callbacks")
        module = module.replace("target/native/libtether.so", EMPTY_NATIVE if empty else native_module)
        if empty:
            config = module[module.index("                value: |\n"):]
            module = module.replace(config, "                value: %s\n" % ("callbacks" if name == "diag_native_callbacks" else "empty"))
        y = y.replace(tether + session, module)
    if name in EMPTY_LIKE:
        empty = tether.replace(TETHER_WASM, EMPTY_WASM)
        empty = re.sub(r"                configuration:\n.*?(?=          - name:|\Z)", "", empty, flags=re.S)
        if name in DIAG_EMPTY:
            mode = DIAG_EMPTY[name]
            empty = empty.replace("                vm_config:\n", "                configuration:\n"
                                  "                  \"@type\": type.googleapis.com/google.protobuf.StringValue\n"
                                  f"                  value: {mode}\n                vm_config:\n", 1)
        y = y.replace("          - name: envoy.filters.http.router\n", empty + "          - name: envoy.filters.http.router\n")
    if name == "native_cookie":
        native = (
            "          - name: envoy.filters.http.stateful_session\n"
            "            typed_config:\n"
            "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession\n"
            "              session_state:\n"
            "                name: envoy.http.stateful_session.cookie\n"
            "                typed_config:\n"
            "                  \"@type\": type.googleapis.com/envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState\n"
            "                  cookie: { name: native, ttl: 3600s, path: / }\n")
        y = y.replace("          - name: envoy.filters.http.router\n", native + "          - name: envoy.filters.http.router\n")
    if name == "ring_hash_cookie":
        y = y.replace("lb_policy: MAGLEV", "lb_policy: RING_HASH")
        y = y.replace("                  - header: { header_name: x-tether-key }\n",
                      "                  - cookie: { name: rh, ttl: 3600s, path: / }\n")
    if name == "diag_tether_token_x10":
        y = y.replace(TETHER_WASM, DIAG_WASM)
        y = y.replace("                    key_values:\n", "                    key_values:\n"
                      "                      TETHER_BENCH_TOKEN_REPEAT: \"10\"\n", 1)
    if name == "tether_hit_cookie_mode":
        # What istio/ ships: the owner travels in cookie tether-owner, read by the cookie
        # session state; tether rewrites the Cookie header and strips that cookie's Set-Cookie.
        y = y.replace('"keysFromEnv": "TETHER_KEYS",', '"keysFromEnv": "TETHER_KEYS", "hostCookie": "tether-owner",')
        a, b = block(y, "              session_state:\n", "          - name: envoy.filters.http.router\n")
        y = y[:a] + ("              session_state:\n"
                     "                name: envoy.http.stateful_session.cookie\n"
                     "                typed_config:\n"
                     "                  \"@type\": type.googleapis.com/envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState\n"
                     "                  cookie: { name: tether-owner, path: / }\n") + y[b:]
    if name in ("tether_hit_access_log", "native_hit_access_log"):
        assert y.count('"absoluteTimeout": "24h",') == 1, "the plugin configuration's absoluteTimeout line"
        y = y.replace('"absoluteTimeout": "24h",', '"absoluteTimeout": "24h", "accessLog": true,')
    if name == "tether_hit_encrypted":
        y = y.replace('"keysFromEnv": "TETHER_KEYS",', '"keysFromEnv": "TETHER_KEYS", "tokenFormat": "Encrypted",')
    return y


TETHER_WASM_REL = "target/wasm32-wasip1/release/tether.wasm"


def http_get(port, path="/", headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.status, r.headers


def wait_ready(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if http_get(port, "/ready")[0] == 200:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit(f"Envoy admin on {port} not ready")


def wait_healthy(admin):
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=5) as r:
                text = r.read().decode()
            if sum(1 for l in text.splitlines() if l.endswith("health_flags::healthy")) >= 3:
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise SystemExit("upstreams not healthy in Envoy")


class Envoy:
    def __init__(self, envoy_bin, name, workdir, wrapper=(), concurrency=1, cpus="0"):
        self.path = os.path.join(workdir, f"{name}.yaml")
        open(self.path, "w").write(envoy_config(name))
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpus, *wrapper, envoy_bin, "-c", self.path, "--concurrency", str(concurrency),
             "--disable-hot-restart", "--log-level", "warn"], cwd=ROOT, stdout=self.log, stderr=self.log)
        wait_ready(PORTS["admin"], timeout=240 if wrapper else 30)
        wait_healthy(PORTS["admin"])

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kb(self):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def allocated(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['admin']}/memory", timeout=5) as r:
            return int(json.loads(r.read())["allocated"])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def cookie_for(name):
    """The cookie header a returning client of this configuration sends."""
    name = base_name(name)
    if name in ("tether_mint", "native_mint"):
        return None
    if name in ("no_affinity", "native_empty", "diag_native_callbacks") + EMPTY_LIKE:
        # Same request size as tether_hit: a tether-sized cookie nobody reads.
        return "tether=" + "A" * 90
    status, headers = http_get(PORTS["listener"])
    cookies = headers.get_all("set-cookie") or []
    want = {"native_cookie": "native=", "ring_hash_cookie": "rh="}.get(name, "tether=")
    for c in cookies:
        if c.startswith(want):
            return c.split(";")[0]
    raise SystemExit(f"{name}: no {want} cookie in {cookies}")


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def ms(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    return {"rps": rps, "requests": total, "p50_ms": ms(50), "p99_ms": ms(99),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": sum(map(int, sock.groups())) if sock else 0}


def wrk(seconds, connections, cookie):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
           f"http://127.0.0.1:{PORTS['listener']}/"]
    if cookie:
        cmd[5:5] = ["-H", f"cookie: {cookie}"]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def envoy_for(envoy_bin, name):
    """The Envoy binary a configuration runs on."""
    if not name.endswith("@1.39"):
        return envoy_bin
    return subprocess.run([os.path.join(ROOT, "scripts/envoy.sh")], env={**os.environ, "ENVOY_VERSION": "1.39.3"},
                          capture_output=True, text=True, check=True).stdout.strip()


def run_one(envoy_bin, name, args, workdir):
    envoy = Envoy(envoy_for(envoy_bin, name), name, workdir)
    try:
        cookie = cookie_for(name)
        wrk(args.warmup, args.connections, cookie)
        cpu0 = envoy.cpu_seconds()
        result = parse_wrk(wrk(args.seconds, args.connections, cookie))
        result["cpu_us_per_req"] = (envoy.cpu_seconds() - cpu0) * 1e6 / max(result["requests"], 1)
        if result["non_2xx"] or result["socket_errors"]:
            raise SystemExit(f"{name}: {result['non_2xx']} non-2xx, {result['socket_errors']} socket errors")
        return result
    finally:
        envoy.stop()


def run_callgrind(envoy_bin, name, args, workdir):
    """Instructions Envoy executes per request (valgrind callgrind, all threads): deterministic,
    so it compares variants on a busy machine where req/s cannot."""
    out = os.path.join(workdir, f"{name}.callgrind")
    # Start-up (Envoy, V8 compiling the module) runs uninstrumented, which is several times faster.
    envoy = Envoy(envoy_for(envoy_bin, name), name, workdir, wrapper=("valgrind", "--tool=callgrind", "--smc-check=all-non-file",
                                                     "--instr-atstart=no", f"--callgrind-out-file={out}"))
    try:
        cookie = cookie_for(name)
        subprocess.run(["callgrind_control", "-i", "on", str(envoy.proc.pid)], capture_output=True, check=True)
        wrk(3, 2, cookie)
        subprocess.run(["callgrind_control", "-z", str(envoy.proc.pid)], capture_output=True, check=True)
        result = parse_wrk(wrk(args.seconds, 2, cookie))
        subprocess.run(["callgrind_control", "-d", str(envoy.proc.pid)], capture_output=True, check=True)
        deadline = time.time() + 30
        while not os.path.exists(out + ".1") and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        totals = int(re.search(r"^totals:\s+(\d+)", open(out + ".1").read(), re.M).group(1))
        if result["non_2xx"] or result["socket_errors"]:
            raise SystemExit(f"{name}: {result['non_2xx']} non-2xx, {result['socket_errors']} socket errors")
        return {"ir_per_req": totals / max(result["requests"], 1), "requests": result["requests"]}
    finally:
        envoy.stop()
        for f in (out, out + ".1"):
            if os.path.exists(f):
                os.remove(f)


def rss_two_workers(envoy_bin, names, workdir):
    """Envoy's resident memory with 2 workers after 2 s of traffic, per configuration (KiB)."""
    rss = {}
    for name in names:
        envoy = Envoy(envoy_bin, name, workdir, concurrency=2, cpus="0")
        try:
            wrk(2, 16, cookie_for(name))
            rss[name] = envoy.rss_kb()
        finally:
            envoy.stop()
    return rss


# Host calls and other work on a hit (tether_hit: envoy/envoy.yaml, header mode, no `scope`),
# read from src/filter/mod.rs (via src/hosts/wasm.rs): what the attribution multiplies the per-call prices by. Keep in
# step with src/filter/mod.rs (the bench-diag build's debug counter is not used: these are fixed).
HIT_WORK = [
    # (item, how many per hit, diagnostic that prices one, how the price is derived)
    ("header read with a value (Cookie)", 1, "header_read"),
    ("  of which proxy_on_memory_allocate + copy", None, "allocate"),
    ("request header write (key, host)", 2, "header_write"),
    ("request header edits, once per request (route re-match, bigger upstream request)", 1, "edit_once"),
    ("response header remove (host header; only when the owner did not serve)", 0, "header_remove"),
    ("property read (xds.cluster_name, upstream.address)", 2, "property"),
    ("clock read (the response reuses the request's on a hit without idleTimeout)", 1, "clock"),
    ("counter increment", 1, "metric"),
    ("token work in V8 (parse, base64, HMAC-SHA256, steering values)", 1, "token"),
    ("stateful_session filter (override host lookup)", 1, "session_filter"),
]


def prices(m):
    """Per-unit cost of each item from diagnostic configurations measured in the same run."""
    e = m.get("wasm_empty")
    p = {}
    if e is None:
        return p
    def per(name, n):
        return (m[name] - e) / n if name in m else None
    p["header_read"] = per("diag_header_read_x10", 10)
    if "diag_header_read_x10" in m and "diag_header_read_missing_x10" in m:
        p["allocate"] = (m["diag_header_read_x10"] - m["diag_header_read_missing_x10"]) / 10
    if "diag_header_write_x10" in m and "diag_wasm_sets_two_headers" in m:
        p["header_write"] = (m["diag_header_write_x10"] - m["diag_wasm_sets_two_headers"]) / 8
        p["edit_once"] = m["diag_wasm_sets_two_headers"] - e - 2 * p["header_write"]
    p["header_remove"] = per("diag_header_remove_x10", 10)
    p["property"] = per("diag_property_x10", 10)
    p["clock"] = per("diag_clock_x10", 10)
    p["metric"] = per("diag_metric_x10", 10)
    if "diag_tether_token_x10" in m and "tether_hit" in m:
        p["token"] = (m["diag_tether_token_x10"] - m["tether_hit"]) / 10
    if "diag_tether_no_session_filter" in m and "tether_hit" in m:
        p["session_filter"] = m["tether_hit"] - m["diag_tether_no_session_filter"]
    return p


def attribution(m):
    """Rows (item, count, unit price, total) explaining tether_hit - wasm_empty, plus the rest."""
    if "tether_hit" not in m or "wasm_empty" not in m:
        return None
    p = prices(m)
    rows, explained = [], 0.0
    for item, count, key in HIT_WORK:
        price = p.get(key)
        if price is None:
            continue
        total = price if count is None else price * count  # a count of 0 costs nothing
        if count is not None:
            explained += total
        rows.append({"item": item, "count": count, "unit": price, "total": total})
    whole = m["tether_hit"] - m["wasm_empty"]
    rows.append({"item": "not attributed (context, glue, allocations in the VM, noise)", "count": None,
                 "unit": None, "total": whole - explained})
    return {"whole": whole, "explained": explained, "rows": rows}


def print_attribution(att, unit):
    if not att:
        return
    print(f"\nwhere tether_hit's cost over wasm_empty goes ({unit} per request):")
    print(f"{'item':<84} {'n':>3} {'each':>9} {'total':>9}")
    for r in att["rows"]:
        n = "" if r["count"] is None else str(r["count"])
        each = "" if r["unit"] is None else f"{r['unit']:.2f}" if unit.startswith("µs") else f"{r['unit']:,.0f}"
        tot = f"{r['total']:.2f}" if unit.startswith("µs") else f"{r['total']:,.0f}"
        print(f"{r['item']:<84} {n:>3} {each:>9} {tot:>9}")
    w = att["whole"]
    fmt = (lambda v: f"{v:.2f}") if unit.startswith("µs") else (lambda v: f"{v:,.0f}")
    share = att["explained"] / w if w else 0
    print(f"{'whole: tether_hit - wasm_empty':<84} {'':>3} {'':>9} {fmt(w):>9}   (explained {share:.0%})")


def memory(envoy_bin, sessions, workdir):
    """Envoy memory before/after `sessions` distinct new sessions (tether_mint)."""
    envoy = Envoy(envoy_bin, "tether_mint", workdir)
    try:
        wrk(2, 16, None)
        before = (envoy.rss_kb(), envoy.allocated())
        done, started = 0, time.time()
        while done < sessions and time.time() - started < 900:
            done += parse_wrk(wrk(10, 16, None))["requests"]
        after = (envoy.rss_kb(), envoy.allocated())
        return {"sessions": done, "rss_kb_before": before[0], "rss_kb_after": after[0],
                "allocated_before": before[1], "allocated_after": after[1]}
    finally:
        envoy.stop()


def chart(summary, path):
    names = [n for n in CONFIGS if n in summary]
    top = max(summary[n]["rps"] for n in names) * 1.1
    w, bar, gap, left = 760, 26, 12, 190
    h = 60 + len(names) * (bar + gap)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="13">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="10" y="22" font-size="15" font-weight="bold">Requests/s through Envoy (1 worker), median of rounds</text>']
    base = summary["no_affinity"]["rps"]
    for i, n in enumerate(names):
        y = 40 + i * (bar + gap)
        width = (w - left - 90) * summary[n]["rps"] / top
        color = "#d9822b" if n.startswith("tether") else "#8a8f98"
        parts.append(f'<text x="{left - 8}" y="{y + bar * 0.7}" text-anchor="end">{n}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{width:.1f}" height="{bar}" fill="{color}"/>')
        parts.append(f'<text x="{left + width + 6:.1f}" y="{y + bar * 0.7}">{summary[n]["rps"]:,.0f} ({summary[n]["rps"] / base:.2f}×)</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--sessions", type=int, default=1_000_000, help="distinct sessions for the memory check (0: skip)")
    p.add_argument("--only", nargs="*", choices=CONFIGS)
    p.add_argument("--callgrind", action="store_true",
                   help="count instructions per request under valgrind instead of timing (deterministic; "
                        "writes target/bench/instructions.json)")
    p.add_argument("--no-rss", action="store_true", help="skip the RSS check on 2 workers")
    args = p.parse_args()
    envoy_bin = subprocess.run([os.path.join(ROOT, "scripts/envoy.sh")], capture_output=True, text=True, check=True).stdout.strip()
    for need in (TETHER_WASM, EMPTY_WASM, UPSTREAM, DIAG_WASM, NATIVE_MODULE, NATIVE_MODULE_1_39, EMPTY_NATIVE):
        if not os.path.exists(need):
            raise SystemExit(f"missing {need}: run `make bench`")
    if not shutil.which("wrk") or not shutil.which("taskset"):
        raise SystemExit("wrk and taskset are needed (make bench installs wrk)")
    outdir = os.path.join(ROOT, "target/bench")
    os.makedirs(outdir, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="tether-bench-")
    upstream = subprocess.Popen(["taskset", "-c", "1", UPSTREAM] + [str(p) for p in PORTS["pods"]])
    names = args.only or CONFIGS
    runs = {n: [] for n in names}
    if args.callgrind:
        try:
            time.sleep(0.3)
            ir = {}
            for n in names:
                ir[n] = run_callgrind(envoy_bin, n, args, workdir)["ir_per_req"]
                print(f"{n:>30}: {ir[n]:>10,.0f} instructions/request", flush=True)
        finally:
            upstream.terminate()
            upstream.wait()
        att = attribution(ir)
        print_attribution(att, "instructions")
        json.dump({"instructions_per_request": ir, "attribution": att, "date": time.strftime("%Y-%m-%d")},
                  open(os.path.join(outdir, "instructions.json"), "w"), indent=2)
        return
    rss = None
    try:
        time.sleep(0.3)
        for r in range(args.rounds):
            for n in (names if r % 2 == 0 else list(reversed(names))):
                res = run_one(envoy_bin, n, args, workdir)
                runs[n].append(res)
                print(f"round {r + 1}/{args.rounds} {n:>22}: {res['rps']:>9,.0f} req/s  p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  {res['cpu_us_per_req']:.1f} µs CPU/req", flush=True)
        mem = memory(envoy_bin, args.sessions, workdir) if args.sessions else None
        if not args.no_rss:
            rss = rss_two_workers(envoy_bin, [n for n in ("wasm_empty", "tether_hit", "native_hit") if n in names], workdir)
    finally:
        upstream.terminate()
        upstream.wait()
    summary = {}
    for n in names:
        summary[n] = {k: statistics.median(x[k] for x in runs[n]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
        summary[n]["rounds"] = [x["rps"] for x in runs[n]]
        summary[n]["what"] = DESCRIPTIONS[n]
    version = subprocess.run([envoy_bin, "--version"], capture_output=True, text=True).stdout.strip().split("version: ")[-1]
    meta = {"date": time.strftime("%Y-%m-%d"), "envoy": version, "cpu": cpu_model(), "cores": os.cpu_count(),
            "rounds": args.rounds, "seconds": args.seconds, "connections": args.connections,
            "wasm_bytes": os.path.getsize(TETHER_WASM)}
    if mem:
        meta["memory"] = mem
    if rss:
        meta["rss_kb_2_workers"] = rss
    att = attribution({n: summary[n]["cpu_us_per_req"] for n in names})
    extra = {"_attribution_cpu_us": att} if att else {}
    json.dump({**summary, **extra, "_meta": meta}, open(os.path.join(outdir, "summary.json"), "w"), indent=2)
    if "no_affinity" in summary:
        chart(summary, os.path.join(outdir, "chart.svg"))
    base = summary.get("no_affinity", {}).get("rps")
    native = summary.get("native_cookie", {}).get("rps")
    print(f"\n{meta['date']}, Envoy {version}, {meta['cpu']}, {args.rounds} rounds × {args.seconds} s, {args.connections} connections")
    empty = summary.get("wasm_empty", {}).get("rps")
    print(f"{'configuration':<30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'µs CPU/req':>10} {'÷no_aff':>8} {'÷native':>8} {'÷empty':>8}")
    for n in names:
        s = summary[n]
        # A configuration on Envoy 1.39 against that Envoy's baselines.
        on = "@1.39" if n.endswith("@1.39") else ""
        b = summary.get("no_affinity" + on, {}).get("rps")
        c = summary.get("native_cookie" + on, {}).get("rps")
        r1 = f"{s['rps'] / b:.2f}" if b else "-"
        r2 = f"{s['rps'] / c:.2f}" if c else "-"
        r3 = f"{s['rps'] / empty:.2f}" if empty and not on else "-"
        print(f"{n:<30} {s['rps']:>9,.0f} {s['p50_ms']:>8.3f} {s['p99_ms']:>8.3f} {s['cpu_us_per_req']:>10.1f} {r1:>8} {r2:>8} {r3:>8}")
    if empty and "tether_hit" in summary and "tether_mint" in summary:
        e, h, t = summary["wasm_empty"], summary["tether_hit"], summary["tether_mint"]
        checks = [("tether_hit req/s ≥ 0.90× wasm_empty", h["rps"] / e["rps"], 0.90, True),
                  ("tether_mint req/s ≥ 0.85× wasm_empty", t["rps"] / e["rps"], 0.85, True),
                  ("tether_hit p99 ≤ 1.25× wasm_empty p99", h["p99_ms"] / e["p99_ms"], 1.25, False)]
        print()
        for what, v, limit, at_least in checks:
            ok = v >= limit if at_least else v <= limit
            print(f"target {what}: {v:.2f}× {'holds' if ok else 'NOT MET'}")
    if base and native and "native_hit" in summary:
        h = summary["native_hit"]["rps"]
        print()
        for what, v, limit in [("native_hit req/s ≥ 0.95× no_affinity", h / base, 0.95),
                               ("native_hit req/s ≥ 0.98× native_cookie", h / native, 0.98)]:
            print(f"target {what}: {v:.2f}× {'holds' if v >= limit else 'NOT MET'}")
    print_attribution(att, "µs CPU")
    if rss:
        print("\nEnvoy RSS with 2 workers after 2 s of traffic: " +
              ", ".join(f"{n} {v:,} KiB" for n, v in rss.items()))
    if mem:
        print(f"\nmemory over {mem['sessions']:,} new sessions: RSS {mem['rss_kb_before']:,} → {mem['rss_kb_after']:,} KiB, "
              f"allocated {mem['allocated_before']:,} → {mem['allocated_after']:,} bytes")
    print(f"\nwrote {os.path.relpath(os.path.join(outdir, 'summary.json'), ROOT)} and chart.svg")


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
