#!/usr/bin/env python3
"""One-off measurement: what clients see when a pod dies, through Envoy with a shipped config.

    scripts/pod-death.py demo [RUNS]      # the demo's kill step RUNS times (default 30)
    scripts/pod-death.py load [SECONDS]   # load, a pod SIGKILLed every ~6 s (default 40)

`demo`: each run starts three demo pods (127.0.0.1:8081-8083) and Envoy afresh, as
`make run` does, mints a session, sends 10 requests with its cookie, SIGTERMs the session's
pod (README's third step), waits for it to exit and sends one more request at once.
`load`: 12 clients, each cycling over 40 cookie-keeping sessions on one keep-alive
connection; every EVERY seconds (6) one pod is SIGKILLed and restarted at the same address
DOWN seconds (1) later. DOWN=8 keeps two pods dead at times.

Counts apart: Envoy's own error replies (5xx without the pod's x-pod header), answers cut
mid-body (a pod killed while it answered: no proxy can retry that), requests that got no
answer, and 200s. Prints Envoy's access log lines (attempts, hosts, flags, details) of every
failure. TETHER_BUILD=native uses envoy/native.yaml; CONFIG=path another config; SET=a=b
replaces text a with b in the config (e.g. SET="host_selection_retry_max_attempts: 50=host_selection_retry_max_attempts: 5").
Needs the ports above free, `make build` / `make build-native`; bounded in time and count.
"""
import collections, http.client, os, re, signal, subprocess, sys, threading, time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE = os.environ.get("TETHER_BUILD") == "native"
PORTS = (8081, 8082, 8083)
WORK = os.path.join(REPO, "target", "pod-death")
FMT = ("access %START_TIME(%T.%3f)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% "
       "upstream=%UPSTREAM_HOST% attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT% "
       "hosts=%UPSTREAM_HOSTS_ATTEMPTED% key=%REQ(x-tether-key)% dur=%DURATION%\\n")


def envoy_binary():
    return os.environ.get("ENVOY") or subprocess.check_output([os.path.join(REPO, "scripts/envoy.sh")], text=True).strip()


def config():
    path = os.environ.get("CONFIG") or os.path.join(REPO, "envoy/native.yaml" if NATIVE else "envoy/envoy.yaml")
    yaml = open(path).read()
    yaml = re.sub(r'inline_string: "access [^"]*"', lambda m: 'inline_string: "%s"' % FMT, yaml)
    for edit in filter(None, os.environ.get("SET", "").split(";")):
        old, new = edit.split("=", 1)
        assert yaml.count(old) >= 1, "SET: %r not in the config" % old
        yaml = yaml.replace(old, new)
    os.makedirs(WORK, exist_ok=True)
    out = os.path.join(WORK, "envoy.yaml")
    open(out, "w").write(yaml)
    return out


def start_pod(port):
    return subprocess.Popen(["python3", os.path.join(REPO, "demo/pod.py"), "--name", "pod-%d" % port, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_envoy(cfg, log_path):
    env = dict(os.environ)
    log = open(log_path, "w")
    return subprocess.Popen([envoy_binary(), "-c", cfg, "--disable-hot-restart", "--log-level", "warn",
                             "--concurrency", "2"], stdout=log, stderr=log, env=env, cwd=REPO)


def get(cookie=None, conn=None, timeout=10):
    c = conn or http.client.HTTPConnection("127.0.0.1", 10000, timeout=timeout)
    headers = {} if conn else {"connection": "close"}
    if cookie:
        headers["cookie"] = "tether=" + cookie
    c.request("GET", "/", headers=headers)
    r = c.getresponse()
    body = r.read()
    sc = r.getheader("set-cookie") or ""
    return r.status, r.getheader("x-pod"), (sc.split(";")[0].split("=", 1)[1] if sc.startswith("tether=") else None), body


def wait_for_envoy(deadline_s=30):
    deadline = time.time() + deadline_s
    while True:
        assert time.time() < deadline, "Envoy did not answer on 127.0.0.1:10000"
        try:
            s, pod, cookie, _ = get(timeout=2)
            if s == 200 and cookie:
                return pod, cookie
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)


def failures(log_path):
    return [l.rstrip() for l in open(log_path) if l.startswith("access ") and " 200 " not in l]


def demo(runs):
    cfg, failed = config(), 0
    for i in range(runs):
        pods = {"pod-%d" % p: start_pod(p) for p in PORTS}
        log_path = os.path.join(WORK, "envoy-demo-%d.log" % i)
        envoy = start_envoy(cfg, log_path)
        try:
            pod, cookie = wait_for_envoy()
            for _ in range(10):
                s, p, c, _ = get(cookie)
                assert s == 200 and p, (s, p)
                if c or p != pod:  # seen with the native build right after start-up
                    print("run %d: before the kill, the session moved from %s to %s%s" % (
                        i, pod, p, " and was re-pinned" if c else ""), flush=True)
                    pod, cookie = p, c or cookie
            pods[pod].send_signal(signal.SIGTERM)
            pods[pod].wait()  # dead: its listening socket is closed
            try:
                s, p, _, _ = get(cookie)
            except (OSError, http.client.HTTPException) as e:
                s, p = 0, type(e).__name__
        finally:
            envoy.send_signal(signal.SIGTERM)
            envoy.wait()
            for proc in pods.values():
                proc.kill()
                proc.wait()
        ok = s == 200 and p not in (None, pod)
        failed += not ok
        print("run %d: SIGTERM %s, next request: %s %s" % (i, pod, s, p), flush=True)
        if not ok:
            print("\n".join("    " + l for l in failures(log_path)[-1:]), flush=True)
    print("demo kill step (%s): %d of %d runs failed" % ("native" if NATIVE else "wasm", failed, runs))


def load(seconds):
    every, down = float(os.environ.get("EVERY", "6")), float(os.environ.get("DOWN", "1"))
    clients, sessions = 12, 40
    cfg = config()
    log_path = os.path.join(WORK, "envoy-load.log")
    pods = {p: start_pod(p) for p in PORTS}
    envoy = start_envoy(cfg, log_path)
    counts, lock, stop = collections.Counter(), threading.Lock(), threading.Event()

    def client():
        cookies, conn = [None] * sessions, None
        for n in range(300_000):
            if stop.is_set():
                break
            k = n % sessions
            conn = conn or http.client.HTTPConnection("127.0.0.1", 10000, timeout=15)
            try:
                conn.request("GET", "/", headers={"cookie": "tether=" + cookies[k]} if cookies[k] else {})
                r = conn.getresponse()
            except (OSError, http.client.HTTPException):
                what = "no answer"
            else:
                try:
                    r.read()
                    pod = r.getheader("x-pod")
                    what = "ok" if r.status == 200 and pod else ("pod %d" % r.status if pod else "envoy %d" % r.status)
                    sc = r.getheader("set-cookie") or ""
                    if what == "ok" and sc.startswith("tether="):
                        cookies[k] = sc.split(";")[0].split("=", 1)[1]
                except (OSError, http.client.HTTPException):
                    what = "cut mid-body"
            if what != "ok" and conn is not None:
                conn.close()
                conn = None
            with lock:
                counts[what] += 1

    kills, timers = [], []
    try:
        wait_for_envoy()
        time.sleep(2.5)  # every pod healthy in Envoy, the workers' load balancers settled
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        started = time.time()
        time.sleep(1)
        n = 0
        while time.time() - started < seconds - 2:
            port = PORTS[n % len(PORTS)]
            n += 1
            if pods[port].poll() is None:
                pods[port].kill()
                pods[port].wait()
                kills.append(port)
                timer = threading.Timer(down, lambda p=port: pods.__setitem__(p, start_pod(p)))
                timer.start()
                timers.append(timer)
            time.sleep(every)
        time.sleep(1)
    finally:
        stop.set()
        for t in timers:
            t.join()
        for t in threading.enumerate():
            if t is not threading.current_thread():
                t.join()
        envoy.send_signal(signal.SIGTERM)
        envoy.wait()
        for proc in pods.values():
            proc.kill()
            proc.wait()
    total = sum(counts.values())
    envoy_errors = sum(v for k, v in counts.items() if k.startswith("envoy "))
    print("load (%s, a pod SIGKILLed every %.0f s, down %.0f s): %.0f s, %d kills, %d requests: %s" % (
        "native" if NATIVE else "wasm", every, down, time.time() - started, len(kills), total, dict(counts)))
    print("  Envoy error replies: %d; cut mid-body: %d; no answer: %d" % (envoy_errors, counts["cut mid-body"], counts["no answer"]))
    bad = failures(log_path)
    print("  access log, non-200 (%d):" % len(bad))
    print("\n".join("    " + l for l in bad[:10]))


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "demo":
        demo(int(sys.argv[2]) if len(sys.argv) > 2 else 30)
    elif mode == "load":
        load(float(sys.argv[2]) if len(sys.argv) > 2 else 40)
    else:
        sys.exit(__doc__)
