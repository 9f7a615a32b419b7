#!/usr/bin/env python3
"""tether's cookie as a real browser treats it: Debian's Chromium (headless), real Envoy
with `envoy/envoy.yaml`, and the demo pods (`demo/pod.py`).

    make test-browser                         # installs what it needs, builds the .wasm
    make test-browser T=test_header_mode      # the tests whose name contains this
    "$(scripts/browser.sh)" tests/browser/browser_test.py -k NAME   # after `make build`

Driver: Playwright for Python (pinned in tests/browser/requirements.txt, installed into
.tools/browser-venv by scripts/browser.sh), pointed at /usr/bin/chromium; it never
downloads a browser. Why it and not a Rust CDP/WebDriver crate (fantoccini,
headless_chrome): it adds no Rust compile time to `make test` on 2 cores (those crates
pull an async HTTP/WebSocket stack into the test build), it needs no chromedriver
process, it is actively maintained (Microsoft; a release for each Chromium milestone),
and it gives these tests what they check directly from the browser: the cookie store
(`context.cookies()`), every response's headers including Set-Cookie, the console, and
cross-origin frames. Python is already needed (Envoy wheel, demo pods). The pip install
takes about 10 s; the suite about 70 s.

Every page is loaded through Envoy on loopback under the host names `app.test` and
`other.example` (a second *site*), both mapped to 127.0.0.1 by Chromium's
`--host-resolver-rules`. HTTPS uses a certificate made at test time with openssl and
trusted through `--ignore-certificate-errors-spki-list` (the connection is then a
valid one: no certificate error, `isSecureContext` is true), HTTP/2 by ALPN.

On a failure each test prints the browser's console, the responses it saw, and Envoy's
log (access log and tether's lines). Every wait is bounded in time and count.
"""
import atexit
import base64
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import unittest
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WASM = REPO / "target/wasm32-wasip1/release/tether.wasm"
APP, OTHER = "app.test", "other.example"
# What Chromium needs as root on a closed network (see README, "Browser tests").
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-proxy-server",
    f"--host-resolver-rules=MAP {APP} 127.0.0.1, MAP {OTHER} 127.0.0.1",
]
TIMEOUT_MS = 10_000
SCRATCH = REPO / "target" / "browser"


def log(msg):
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def wait_until(what, timeout, ready):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port():
    for _ in range(200):
        port = random.randint(20_000, 30_000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


CHILDREN = []  # every pod and Envoy process, killed at exit whatever happened


@atexit.register
def _kill_children():
    for proc in CHILDREN:
        if proc.poll() is None:
            proc.kill()


def envoy_binary():
    if os.environ.get("ENVOY"):
        return os.environ["ENVOY"]
    return subprocess.run([REPO / "scripts/envoy.sh"], check=True, capture_output=True,
                          text=True).stdout.strip()


# ------------------------------------------------------------------------- pods, Envoy

class Pod:
    def __init__(self, name):
        self.name, self.port = name, free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "demo/pod.py"), "--name", name, "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        CHILDREN.append(self.proc)
        try:
            wait_until(f"pod {name}", 10, self._up)
        except AssertionError:
            self.kill()
            raise

    def _up(self):
        try:
            return http_get(f"http://127.0.0.1:{self.port}/healthz")[0] == 200
        except OSError:
            return False

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: connections reset, no goodbye
        self.proc.wait(5)


class Tls:
    """A self-signed certificate for both host names, made now with openssl."""

    def __init__(self, directory):
        self.cert, self.key = directory / "cert.pem", directory / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", f"/CN={APP}",
             "-addext", f"subjectAltName=DNS:{APP},DNS:{OTHER}",
             "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True)
        der = subprocess.run(
            f"openssl x509 -in {self.cert} -pubkey -noout | openssl pkey -pubin -outform der",
            shell=True, check=True, capture_output=True).stdout
        # SHA-256 of the SubjectPublicKeyInfo, what --ignore-certificate-errors-spki-list takes.
        self.spki = base64.b64encode(hashlib.sha256(der).digest()).decode()


class Envoy:
    """envoy/envoy.yaml with its ports, endpoints and plugin configuration replaced (the
    same edits as tests/common/mod.rs), optionally behind a TLS listener."""

    def __init__(self, pods, plugin, tls=None, directory=None, expect_failure=False):
        self.port, self.admin = free_port(), free_port()
        self.pods = pods
        yaml = (REPO / "envoy/envoy.yaml").read_text()
        yaml = replace_once(yaml, "port_value: 10000", f"port_value: {self.port}")
        yaml = replace_once(yaml, "port_value: 9901", f"port_value: {self.admin}")
        mark = "      - lb_endpoints:\n"
        yaml = yaml[: yaml.index(mark) + len(mark)] + "".join(
            f"        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p.port} }} }} }}\n"
            for p in pods)
        start = yaml.index("value: |\n") + len("value: |\n")
        end = yaml.index("          - name: envoy.filters.http.stateful_session")
        body = json.dumps(plugin, indent=2)
        yaml = yaml[:start] + "".join(f"                    {line}\n" for line in body.splitlines()) + yaml[end:]
        if tls:
            # HTTP/2 and HTTP/1.1 by ALPN, as a browser-facing HTTPS listener would offer.
            yaml = replace_once(
                yaml, "    filter_chains:\n    - filters:\n",
                "    filter_chains:\n    - transport_socket:\n        name: envoy.transport_sockets.tls\n"
                "        typed_config:\n"
                "          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n"
                "          common_tls_context:\n            alpn_protocols: [h2, http/1.1]\n"
                f"            tls_certificates:\n            - certificate_chain: {{ filename: \"{tls.cert}\" }}\n"
                f"              private_key: {{ filename: \"{tls.key}\" }}\n"
                "      filters:\n")
        self.scheme = "https" if tls else "http"
        directory = directory or Path(tempfile.mkdtemp(dir=SCRATCH))
        (directory / "envoy.yaml").write_text(yaml)
        self.log_path = directory / "envoy.log"
        with self.log_path.open("w") as out:
            self.proc = subprocess.Popen(
                [envoy_binary(), "-c", str(directory / "envoy.yaml"), "--disable-hot-restart",
                 "--concurrency", "2", "--log-level", "info", "--component-log-level", "wasm:debug"],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        CHILDREN.append(self.proc)
        if expect_failure:
            return
        try:
            wait_until("Envoy ready", 30, self._ready)
            wait_until("every pod healthy in Envoy", 20, self._all_healthy)
        except AssertionError as e:
            self.stop()
            raise AssertionError(f"{e}\n--- Envoy log ({self.log_path}):\n{self.log_tail()}") from None
        # Host health reaches the workers' load balancers after update_merge_window (1 s).
        time.sleep(1.5)

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"Envoy exited ({self.proc.returncode}) before it was ready")
        try:
            return http_get(f"http://127.0.0.1:{self.admin}/ready")[0] == 200
        except OSError:
            return False

    def health_flags(self):
        _, text = http_get(f"http://127.0.0.1:{self.admin}/clusters")
        return {line.split("::")[1]: line.split("::")[-1]
                for line in text.splitlines() if "::health_flags::" in line}

    def _all_healthy(self):
        flags = self.health_flags()
        return all(flags.get(f"127.0.0.1:{p.port}") == "healthy" for p in self.pods if p.proc.poll() is None)

    def url(self, host, path="/page.html"):
        return f"{self.scheme}://{host}:{self.port}{path}"

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines=80):
        """The end of Envoy's log without its start-up inventory (access log lines, tether's
        own log lines, warnings and errors remain)."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join([l for l in text if "][info][main]" not in l][-lines:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def replace_once(text, old, new):
    assert text.count(old) == 1, f"envoy.yaml must contain {old!r} exactly once"
    return text.replace(old, new)


# ------------------------------------------------------------------------- the browser

class Browser:
    """One Chromium with a profile directory of its own (kept for a restart).

    Third-party cookies: this Chromium (156, headless) blocks them by default
    (`blockedReasons: UserPreferences` on a cross-site request), as Chrome does in
    incognito windows and Safari/Firefox do by default; regular Chrome windows allow them.
    The profile states the choice explicitly (`profile.cookie_controls_mode`: 0 allow, 1
    block), so that a cookie missing from a cross-site request is SameSite's doing."""

    def __init__(self, pw, profile, tls=None, third_party_cookies=True):
        self.pw, self.profile, self.tls = pw, profile, tls
        prefs = profile / "Default" / "Preferences"
        if not prefs.exists():
            prefs.parent.mkdir(parents=True)
            prefs.write_text(json.dumps({"profile": {
                "cookie_controls_mode": 0 if third_party_cookies else 1,
                "block_third_party_cookies": not third_party_cookies}}))
        self.console, self.responses = [], []
        self.context = None
        self.launch()

    def launch(self):
        args = list(CHROMIUM_ARGS)
        if self.tls:
            args.append(f"--ignore-certificate-errors-spki-list={self.tls.spki}")
        self.context = self.pw.chromium.launch_persistent_context(
            str(self.profile), executable_path=CHROMIUM, headless=True, args=args,
            timeout=30_000)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.context.on("page", self._watch)
        self.context.on("response", lambda r: self.responses.append(r))
        for page in self.context.pages:
            self._watch(page)

    def _watch(self, page):
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def page(self):
        return self.context.pages[0] if self.context.pages else self.context.new_page()

    def cookies(self, name="tether", host=APP):
        return [c for c in self.context.cookies() if c["name"] == name and c["domain"] == host]

    def restart(self):
        """Closes Chromium (cookies are written out on a clean exit) and starts it again
        on the same profile."""
        self.context.close()
        self.launch()

    def close(self):
        try:
            self.context.close()
        except Exception:  # already gone
            pass


def set_cookie_of(response):
    return response.header_value("set-cookie") or ""


# ------------------------------------------------------------------------- tests

class BrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        assert WASM.exists(), f"{WASM} is missing: run `make build`"
        assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run `make browser-tools`"
        SCRATCH.mkdir(parents=True, exist_ok=True)
        cls.pw = sync_playwright().start()

    @classmethod
    def tearDownClass(cls):
        cls.pw.stop()

    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix=self._testMethodName[:40] + "-", dir=SCRATCH))
        self.envoys, self.browsers, self.pods = [], [], []
        self._started = time.monotonic()

    def tearDown(self):
        # unittest records a failure in the result as soon as the test method raises.
        result = getattr(getattr(self, "_outcome", None), "result", None)
        failed = result is None or any(t is self for t, _ in result.failures + result.errors)
        for b in self.browsers:
            b.close()
        for e in self.envoys:
            e.stop()  # first, so that its access log is flushed
        if failed:
            self.print_diagnostics()
        for p in self.pods:
            p.kill()
        if not failed:
            shutil.rmtree(self.dir, ignore_errors=True)
        log(f"{self._testMethodName}: {time.monotonic() - self._started:.1f}s")

    def print_diagnostics(self):
        out = [f"===== diagnostics for {self._testMethodName} ====="]
        for i, b in enumerate(self.browsers):
            out.append(f"--- browser {i} console ({len(b.console)} messages)")
            out.extend(b.console[-40:])
            out.append(f"--- browser {i} responses ({len(b.responses)})")
            for r in b.responses[-40:]:
                try:
                    out.append(f"{r.status} {r.request.method} {r.url} x-pod={r.headers.get('x-pod')} "
                               f"x-tether={r.headers.get('x-tether')}")
                except Exception:
                    out.append(f"? {r.url}")
        for i, e in enumerate(self.envoys):
            out.append(f"--- Envoy {i} log ({e.log_path}), last lines")
            out.append(e.log_tail())
        print("\n".join(out), file=sys.stderr, flush=True)

    # helpers

    def start_pods(self, n=3):
        pods = [Pod(f"pod-{chr(ord('a') + i)}") for i in range(n)]
        self.pods.extend(pods)
        return pods

    def start_envoy(self, plugin, pods, tls=None):
        d = self.dir / f"envoy{len(self.envoys)}"
        d.mkdir()
        envoy = Envoy(pods, plugin, tls=tls, directory=d)
        self.envoys.append(envoy)
        return envoy

    def start_browser(self, tls=None, third_party_cookies=True):
        self.profiles = getattr(self, "profiles", 0) + 1
        b = Browser(self.pw, self.dir / f"profile{self.profiles}", tls=tls,
                    third_party_cookies=third_party_cookies)
        self.browsers.append(b)
        return b

    def tls(self):
        return Tls(self.dir)

    def load(self, browser, url):
        """Loads the demo page; returns (response, pod named in the page)."""
        page = browser.page()
        resp = page.goto(url)
        self.assertIsNotNone(resp, url)
        self.assertEqual(resp.status, 200, url)
        pod = page.evaluate("document.body.dataset.pod")
        self.assertEqual(resp.headers.get("x-pod"), pod)
        return resp, pod

    def only_cookie(self, browser, name="tether", host=APP):
        cookies = browser.cookies(name, host)
        self.assertEqual(len(cookies), 1, f"{name} cookies for {host} in the browser: {cookies}")
        return cookies[0]

    def plugin(self, **extra):
        config = {"keysFromEnv": "TETHER_KEYS", "debugHeader": "x-tether"}
        config.update(extra)
        return config

    # ---------------------------------------------------------------------------------

    def test_page_fetches_post_then_post_and_websocket_stay_on_the_page_pod(self):
        """The shipped cookie (Lax, HttpOnly, Session) over plain HTTP: everything the page's
        script does reaches the pod that served the page, and a second load returns to it."""
        pods = self.start_pods()
        envoy = self.start_envoy(self.plugin(), pods)
        browser = self.start_browser()
        resp, owner = self.load(browser, envoy.url(APP))
        self.assertIn("tether=", set_cookie_of(resp))
        self.assertEqual(resp.headers.get("x-tether"), "new")
        cookie = self.only_cookie(browser)
        self.assertEqual((cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"], cookie["expires"]),
                         (True, False, "Lax", "/", -1))
        log(f"page on {owner}; cookie {cookie['name']} ({len(cookie['value'])} chars), HttpOnly, Lax, session")
        before = len(browser.responses)

        page = browser.page()
        fetches = page.evaluate("Promise.all([1,2,3,4,5].map(i => demo.call('GET', '/api/item/' + i)))")
        self.assertEqual([(f["status"], f["pod"], f["tether"]) for f in fetches], [(200, owner, "hit")] * 5)
        for f in fetches:
            self.assertIn(f"tether={cookie['value']}", f["body"]["cookie"])
        offer, start = page.evaluate("demo.whipThenStart()")
        self.assertEqual((offer["status"], offer["body"]["method"], offer["body"]["path"], offer["pod"]),
                         (200, "POST", "/whip", owner))
        self.assertEqual((start["status"], start["body"]["path"], start["pod"]), (200, "/listening/start", owner))
        ws = page.evaluate("demo.ws('/ws')")
        self.assertEqual(ws, {"first": owner, "echo": "echo-" + owner})

        for again in (page.reload, lambda: page.goto(envoy.url(APP))):
            resp = again()
            self.assertEqual((resp.status, resp.headers.get("x-pod"), resp.headers.get("x-tether")), (200, owner, "hit"))
        later = browser.responses[before:]
        self.assertGreaterEqual(len(later), 9)
        self.assertEqual([r.url for r in later if "tether=" in set_cookie_of(r)], [], "no Set-Cookie after the first")
        self.assertEqual(self.only_cookie(browser)["value"], cookie["value"])
        log(f"5 fetches, POST /whip + POST /listening/start, WebSocket, 2 reloads: all on {owner}, 0 Set-Cookie")

    def test_httponly_hides_the_token_from_page_script(self):
        pods = self.start_pods(2)
        hidden = self.start_envoy(self.plugin(), pods)
        visible = self.start_envoy(self.plugin(cookie={"httpOnly": False}), pods)
        browser = self.start_browser()
        page = browser.page()

        self.load(browser, hidden.url(APP))
        page.evaluate("document.cookie = 'script=1; path=/'")  # document.cookie itself works
        stored = self.only_cookie(browser)
        self.assertTrue(stored["httpOnly"])
        seen = page.evaluate("document.cookie")
        self.assertEqual(seen, "script=1")
        # Nor can script overwrite it (an HttpOnly cookie cannot be replaced from script).
        page.evaluate("document.cookie = 'tether=forged; path=/'")
        self.assertEqual(self.only_cookie(browser)["value"], stored["value"])
        log(f"httpOnly true: document.cookie = {seen!r}; the store holds tether (HttpOnly); script overwrite ignored")

        # Control: the same page with httpOnly false does show the token to script. (Cookies
        # do not isolate by port, and both Envoys share key and scope: start afresh.)
        browser.context.clear_cookies()
        self.load(browser, visible.url(APP))
        stored = self.only_cookie(browser)
        self.assertFalse(stored["httpOnly"])
        seen = page.evaluate("document.cookie")
        self.assertIn(f"tether={stored['value']}", seen)
        log("httpOnly false (control): document.cookie shows tether=<token>")

    def test_https_secure_samesite_none_is_sent_cross_site(self):
        """SameSite=None (implies Secure) over HTTPS: a cross-site credentialed fetch and a
        cross-site iframe both carry the cookie and reach the owner, where the browser
        allows third-party cookies; where it blocks them, SameSite=None does not help."""
        pods = self.start_pods()
        tls = self.tls()
        envoy = self.start_envoy(self.plugin(cookie={"sameSite": "None"}), pods, tls=tls)
        browser = self.start_browser(tls=tls)
        page = browser.page()
        resp, owner = self.load(browser, envoy.url(APP))
        self.assertTrue(page.evaluate("isSecureContext"))
        self.assertIn("SameSite=None", set_cookie_of(resp))
        self.assertIn("Secure", set_cookie_of(resp))
        cookie = self.only_cookie(browser)
        self.assertEqual((cookie["secure"], cookie["sameSite"]), (True, "None"))

        self.load(browser, envoy.url(OTHER))  # a page of another site
        got = page.evaluate("url => demo.call('GET', url)", envoy.url(APP, "/api/cross-site"))
        self.assertEqual((got["status"], got["pod"], got["tether"]), (200, owner, "hit"))
        self.assertIn(f"tether={cookie['value']}", got["body"]["cookie"])
        frame_pod = self.iframe_pod(page, envoy.url(APP))
        self.assertEqual(frame_pod, (owner, "hit"))
        self.assertEqual(self.only_cookie(browser)["value"], cookie["value"])
        log(f"SameSite=None over HTTPS: cross-site fetch and iframe reached {owner} with the cookie")

        blocking = self.start_browser(tls=tls, third_party_cookies=False)
        page = blocking.page()
        _, owner = self.load(blocking, envoy.url(APP))
        cookie = self.only_cookie(blocking)
        self.load(blocking, envoy.url(OTHER))
        got = page.evaluate("url => demo.call('GET', url)", envoy.url(APP, "/api/cross-site"))
        self.assertEqual((got["status"], got["tether"], got["body"]["cookie"]), (200, "new", ""))
        self.assertEqual(self.iframe_pod(page, envoy.url(APP))[1], "new")
        self.assertEqual(self.only_cookie(blocking)["value"], cookie["value"])
        log("SameSite=None with third-party cookies blocked: cross-site fetch and iframe carry no cookie")

    def iframe_pod(self, page, url):
        """Embeds `url` in an iframe of `page`; returns (pod, x-tether) of the framed page."""
        with page.expect_response(lambda r: r.url == url) as info:
            page.evaluate("""url => new Promise((ok, fail) => {
                const f = document.createElement('iframe');
                f.onload = ok; f.onerror = fail; f.src = url; document.body.appendChild(f); })""", url)
        resp = info.value
        frame = next(f for f in page.frames if f.url == url)
        return frame.evaluate("document.body.dataset.pod"), resp.headers.get("x-tether")

    def test_secure_cookie_is_not_kept_over_plain_http(self):
        """The same SameSite=None cookie on a plain-HTTP listener: Chromium drops a Secure
        cookie set over http:// (for a host other than localhost), so every page load is a
        new session. This is why `secure` needs HTTPS."""
        pods = self.start_pods()
        envoy = self.start_envoy(self.plugin(cookie={"sameSite": "None"}), pods)
        browser = self.start_browser()
        tethers = []
        for _ in range(3):
            resp, _ = self.load(browser, envoy.url(APP))
            self.assertIn("Secure", set_cookie_of(resp))
            tethers.append(resp.headers.get("x-tether"))
        self.assertEqual(tethers, ["new"] * 3)
        self.assertEqual(browser.cookies(), [])
        log("Secure cookie over http://app.test: not stored; 3 loads = 3 new sessions")

    def test_https_samesite_lax_and_strict_behave_as_configured(self):
        pods = self.start_pods()
        tls = self.tls()
        for same_site in ("Lax", "Strict"):
            envoy = self.start_envoy(self.plugin(cookie={"sameSite": same_site, "secure": True}), pods, tls=tls)
            browser = self.start_browser(tls=tls)
            page = browser.page()
            resp, owner = self.load(browser, envoy.url(APP))
            cookie = self.only_cookie(browser)
            self.assertEqual((cookie["sameSite"], cookie["secure"]), (same_site, True))

            # Same-site navigation (a link on app.test): the cookie is sent.
            with page.expect_navigation() as nav:
                self.click_link(page, envoy.url(APP, "/page.html?same-site"))
            self.assertEqual((nav.value.headers.get("x-pod"), nav.value.headers.get("x-tether")), (owner, "hit"))

            # From another site: a credentialed fetch and an iframe never carry it.
            self.load(browser, envoy.url(OTHER))
            got = page.evaluate("url => demo.call('GET', url)", envoy.url(APP, "/api/cross-site"))
            self.assertEqual(got["status"], 200)
            self.assertNotIn("tether=", got["body"]["cookie"])
            self.assertEqual(got["tether"], "new")  # tether saw no token: a new session...
            _, frame_tether = self.iframe_pod(page, envoy.url(APP, "/page.html?framed"))
            self.assertEqual(frame_tether, "new")
            # ...whose Set-Cookie the browser refused: the stored token is unchanged.
            self.assertEqual(self.only_cookie(browser)["value"], cookie["value"])

            # A link from the other site (top-level GET navigation).
            with page.expect_navigation() as nav:
                self.click_link(page, envoy.url(APP, "/page.html?from-other-site"))
            arrived = (nav.value.headers.get("x-pod"), nav.value.headers.get("x-tether"))
            if same_site == "Lax":
                self.assertEqual(arrived, (owner, "hit"))
                self.assertEqual(self.only_cookie(browser)["value"], cookie["value"])
                log(f"Lax: same-site link and cross-site link reach {owner}; cross-site fetch and iframe "
                    f"go without the cookie and the browser refuses their Set-Cookie")
            else:
                # Strict: the cookie is not sent on a cross-site navigation, so tether starts a
                # new session there, and the browser *does* store that response's cookie (a
                # top-level navigation may set SameSite=Strict cookies): the session restarts.
                self.assertEqual(arrived[1], "new")
                replaced = self.only_cookie(browser)
                self.assertNotEqual(replaced["value"], cookie["value"])
                # A reload of that page keeps the cross-site initiator: no cookie again, and
                # one more new session replaces the cookie.
                resp = page.reload()
                self.assertEqual(resp.headers.get("x-tether"), "new")
                replaced = self.only_cookie(browser)
                # A same-site link from there on carries the newest cookie.
                with page.expect_navigation() as nav:
                    self.click_link(page, envoy.url(APP, "/page.html?then-same-site"))
                self.assertEqual((nav.value.headers.get("x-pod"), nav.value.headers.get("x-tether")),
                                 (resp.headers.get("x-pod"), "hit"))
                self.assertEqual(self.only_cookie(browser)["value"], replaced["value"])
                log(f"Strict: same-site link reaches {owner}; cross-site fetch, iframe and link go without "
                    f"the cookie; the link's new session replaces it (so does a reload of that page); "
                    f"same-site links then stay on {resp.headers.get('x-pod')}")
            browser.close()
            self.browsers.remove(browser)

    def click_link(self, page, url):
        page.evaluate("""url => { const a = document.createElement('a'); a.id = 'go'; a.href = url;
                                  a.textContent = 'go'; document.body.appendChild(a); }""", url)
        page.click("#go")

    def test_host_prefix_cookie_is_accepted_over_https(self):
        pods = self.start_pods()
        tls = self.tls()
        envoy = self.start_envoy(self.plugin(cookie={"name": "__Host-tether", "secure": True}), pods, tls=tls)
        browser = self.start_browser(tls=tls)
        resp, owner = self.load(browser, envoy.url(APP))
        self.assertTrue(set_cookie_of(resp).startswith("__Host-tether="), set_cookie_of(resp))
        cookie = self.only_cookie(browser, "__Host-tether")
        # Host-only (no Domain attribute: Playwright shows the bare host), Path=/, Secure.
        self.assertEqual((cookie["domain"], cookie["path"], cookie["secure"]), (APP, "/", True))
        page = browser.page()
        # The page came over HTTP/2 (the listener offers h2 by ALPN, as HTTPS front ends do).
        self.assertEqual(page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol"), "h2")
        fetches = page.evaluate("Promise.all([1,2,3].map(i => demo.call('GET', '/api/' + i)))")
        self.assertEqual([(f["pod"], f["tether"]) for f in fetches], [(owner, "hit")] * 3)
        for f in fetches:
            self.assertIn(f"__Host-tether={cookie['value']}", f["body"]["cookie"])
        ws = page.evaluate("demo.ws('/ws')")  # wss:// through the TLS listener
        self.assertEqual(ws, {"first": owner, "echo": "echo-" + owner})
        resp = page.reload()
        self.assertEqual((resp.headers.get("x-pod"), set_cookie_of(resp)), (owner, ""))
        log(f"__Host-tether stored by the browser (host-only, Path=/, Secure); page over h2; "
            f"fetches, wss:// WebSocket and reload on {owner}")

        # Configured so a browser would drop it: Envoy refuses the configuration, naming the field.
        for bad, field in ((dict(secure=True, domain=APP), "cookie.domain"),
                           (dict(secure=True, path="/app"), "cookie.path"),
                           (dict(secure=False), "cookie.secure")):
            cookie_config = dict(name="__Host-tether", **bad)
            d = self.dir / f"refused-{field}"
            d.mkdir()
            refused = Envoy(pods, self.plugin(cookie=cookie_config), tls=tls, directory=d, expect_failure=True)
            self.envoys.append(refused)
            code = refused.wait_exit(20)
            self.assertIsNotNone(code, f"Envoy accepted {cookie_config}")
            self.assertNotEqual(code, 0)
            text = refused.log_path.read_text(errors="replace")
            self.assertIn(f"`{field}`", text)
            self.assertIn("Unable to create Wasm plugin", text)
        log("__Host- with Domain, Path=/app or without Secure: Envoy refuses at load, naming the field")

    def test_permanent_cookie_survives_a_browser_restart_and_session_does_not(self):
        pods = self.start_pods()
        for lifetime in ("Permanent", "Session"):
            envoy = self.start_envoy(self.plugin(cookie={"lifetimeType": lifetime}), pods)
            browser = self.start_browser()
            resp, owner = self.load(browser, envoy.url(APP))
            cookie = self.only_cookie(browser)
            if lifetime == "Permanent":
                max_age = int(set_cookie_of(resp).split("Max-Age=")[1].split(";")[0])
                self.assertTrue(86_300 <= max_age <= 86_400, set_cookie_of(resp))
                self.assertAlmostEqual(cookie["expires"], time.time() + 86_400, delta=120)
            else:
                self.assertNotIn("Max-Age", set_cookie_of(resp))
                self.assertEqual(cookie["expires"], -1)
            browser.restart()
            after = browser.cookies()
            resp, pod = self.load(browser, envoy.url(APP))
            if lifetime == "Permanent":
                self.assertEqual([c["value"] for c in after], [cookie["value"]])
                self.assertEqual((pod, resp.headers.get("x-tether"), set_cookie_of(resp)), (owner, "hit", ""))
                log(f"Permanent: cookie kept across the restart; back on {owner}, no Set-Cookie")
            else:
                self.assertEqual(after, [])
                self.assertEqual(resp.headers.get("x-tether"), "new")
                self.assertIn("tether=", set_cookie_of(resp))
                log(f"Session: cookie gone after the restart; a new session (was {owner}, now {pod})")
            browser.close()
            self.browsers.remove(browser)

    def test_owner_killed_browser_moves_to_one_new_pod_and_replaces_its_cookie(self):
        """The owner dies: every fetch is answered by a live pod, all but the retried first ones
        by one pod; the first miss replaces the cookie with one that keeps the owner
        (repinAfter, 2 s here), and once the window has passed the next fetch re-pins the
        session to that pod."""
        pods = self.start_pods()
        envoy = self.start_envoy(self.plugin(repinAfter="2s"), pods)
        browser = self.start_browser()
        page = browser.page()
        _, owner = self.load(browser, envoy.url(APP))
        old = self.only_cookie(browser)["value"]
        victim = next(p for p in pods if p.name == owner)
        victim.kill()
        killed_at = time.monotonic()
        before = len(browser.responses)
        calls = page.evaluate("""async () => { const out = [];
            for (let i = 0; i < 10; i++) out.push(await demo.call('GET', '/api/after-kill/' + i));
            return out; }""")
        took = time.monotonic() - killed_at
        self.assertEqual([c["status"] for c in calls], [200] * 10)
        served = [c["pod"] for c in calls]
        self.assertNotIn(owner, served)
        # Until Envoy ejects the dead owner (two refused connections) a fetch is retried on
        # whichever pod the retry's pick gives; from then on the hash of the session id
        # places every fetch on one pod, the one the session is re-pinned to.
        settled = set(served[2:])
        self.assertEqual(len(settled), 1, f"after the kill the session was served by {served}")
        new_owner = settled.pop()
        self.assertEqual([c["tether"] for c in calls], ["owner-away"] * 10)
        set_cookies = [set_cookie_of(r) for r in browser.responses[before:]]
        self.assertEqual(sum("tether=" in s for s in set_cookies), 1, set_cookies)
        self.assertIn("tether=", set_cookies[0])
        kept = self.only_cookie(browser)["value"]
        self.assertNotEqual(kept, old)
        # Requests 2..10 carried the replaced cookie.
        self.assertTrue(all(f"tether={kept}" in c["body"]["cookie"] for c in calls[1:]))
        # The first miss came before `took`; whole seconds: re-pinned at most 3 s after it.
        time.sleep(max(0.0, killed_at + took + 3.1 - time.monotonic()))
        after = page.evaluate("() => demo.call('GET', '/api/after-window')")
        self.assertEqual((after["status"], after["pod"], after["tether"]), (200, new_owner, "repinned"))
        new = self.only_cookie(browser)["value"]
        self.assertNotIn(new, (old, kept))
        resp, pod = self.load(browser, envoy.url(APP))
        self.assertEqual((pod, resp.headers.get("x-tether")), (new_owner, "hit"))
        log(f"owner {owner} killed: 10 fetches in {took:.2f}s all 200, on {served}, the first "
            f"replacing the cookie (owner kept); after repinAfter one fetch re-pinned it to {new_owner}, then a hit")

    def test_header_mode_from_a_page_script(self):
        """type: Header (no cookie) for a single-page app: the script keeps the token from the
        x-tether-session response header and sends it back on its fetches."""
        pods = self.start_pods()
        envoy = self.start_envoy(self.plugin(type="Header"), pods)
        browser = self.start_browser()
        page = browser.page()
        resp, _ = self.load(browser, envoy.url(APP))
        self.assertEqual(set_cookie_of(resp), "")
        result = page.evaluate("""async () => {
            const first = await demo.call('GET', '/api/login');
            const token = first.session;
            const later = [];
            for (let i = 0; i < 5; i++)
              later.push(await demo.call(i % 2 ? 'POST' : 'GET', '/api/spa/' + i,
                                         i % 2 ? '{}' : undefined, { 'x-tether-session': token }));
            const without = [];
            for (let i = 0; i < 3; i++) without.push(await demo.call('GET', '/api/anonymous/' + i));
            return { first, token, later, without, cookies: document.cookie };
        }""")
        first, token = result["first"], result["token"]
        self.assertTrue(token and len(token) > 40, f"x-tether-session: {token!r}")
        self.assertEqual(first["tether"], "new")
        owner = first["pod"]
        self.assertEqual([(c["status"], c["pod"], c["tether"], c["session"]) for c in result["later"]],
                         [(200, owner, "hit", None)] * 5)
        # Without the header every fetch is a new session with a new token.
        self.assertEqual([c["tether"] for c in result["without"]], ["new"] * 3)
        self.assertEqual(len({c["session"] for c in result["without"]} | {token}), 4)
        self.assertEqual(result["cookies"], "")
        self.assertEqual(browser.context.cookies(), [])
        log(f"header mode: token from x-tether-session; 5 fetches (GET/POST) with it on {owner}, no cookie stored")

    def test_learn_mode_wraps_the_apps_jsessionid_and_follows_its_pod(self):
        """learn mode: the app (demo/pod.py's /webapp) issues its own JSESSIONID; the browser
        keeps a signed envelope in its place, with the app's attributes; the app gets its own
        id back on every request, on the pod that issued it. When that pod dies, the pod the
        session lands on issues a new id, whose envelope replaces the browser's cookie."""
        pods = self.start_pods()
        envoy = self.start_envoy(self.plugin(absoluteTimeout="24h", learn={"cookie": "JSESSIONID"}), pods)
        browser = self.start_browser()
        page = browser.page()
        first_response = len(browser.responses)

        def load():
            """A page load of the app: (response, the app's state from the page)."""
            resp, pod = self.load(browser, envoy.url(APP, "/webapp/"))
            state = page.evaluate("({...document.body.dataset})")
            self.assertEqual(state["pod"], pod)
            return resp, dict(pod=pod, session=state["session"], presented=json.loads(state["presented"]),
                              visits=int(state["visits"]), new=state["new"] == "true")

        def fetches(n, name):
            """n JSON visits by fetch, one after the other: (pod, x-seen-key, the app's state)."""
            calls = page.evaluate("""([n, name]) => (async () => { const out = [];
                for (let i = 0; i < n; i++) out.push(await webapp.visit('/webapp/' + name + '/' + i));
                return out; })()""", [n, name])
            self.assertEqual([c["status"] for c in calls], [200] * n)
            return [(c["pod"], c["seenKey"], c["body"]) for c in calls]

        def envelope_of(resp, app_id):
            """The envelope in the response's Set-Cookie (its only one), with the app's attributes."""
            headers = set_cookie_of(resp).split("\n")  # Playwright joins several with newlines
            self.assertEqual(len(headers), 1, f"Set-Cookie: {headers}")
            self.assertTrue(headers[0].startswith("JSESSIONID="), f"Set-Cookie: {headers}")
            value, _, attributes = headers[0][len("JSESSIONID="):].partition(";")
            self.assertEqual(attributes, " Path=/webapp; HttpOnly", f"Set-Cookie: {headers}")
            self.assertNotEqual(value, app_id)
            self.assertRegex(value, r"^[A-Za-z0-9_-]{40,}$")
            stored = self.only_cookie(browser, "JSESSIONID")
            self.assertEqual((stored["value"], stored["path"], stored["httpOnly"], stored["secure"],
                              stored["expires"]), (value, "/webapp", True, False, -1))
            return value

        # The first load: no JSESSIONID yet; the pod issues one, tether wraps it.
        resp, state = load()
        owner, app_id = state["pod"], state["session"]
        self.assertEqual((state["presented"], state["visits"], state["new"]), ([], 1, True))
        envelope = envelope_of(resp, app_id)
        page.evaluate("document.cookie = 'theme=dark; path=/'")  # a cookie of the page's own
        log(f"first load on {owner}: app id {app_id}; the browser keeps JSESSIONID=<envelope, "
            f"{len(envelope)} chars>; Path=/webapp; HttpOnly")

        # 3 fetches and 2 reloads: the app sees its own id (never the envelope) on its pod.
        seen = fetches(3, "api")
        states = [body for _, _, body in seen]
        for _ in range(2):
            resp, state = load()
            states.append(state)
        self.assertEqual([(s["pod"], s["session"], s["presented"], s["visits"], s["new"]) for s in states],
                         [(owner, app_id, [app_id], v, False) for v in range(2, 7)])
        for pod, key, body in seen:
            self.assertEqual(pod, owner)
            self.assertEqual(sorted(body["cookie"].split("; ")), sorted([f"JSESSIONID={app_id}", "theme=dark"]))
        keys = {key for _, key, _ in seen}
        self.assertEqual(len(keys), 1, f"x-tether-key the pod saw: {keys}")
        self.assertNotIn("-", keys)
        self.assertEqual(self.only_cookie(browser, "JSESSIONID")["value"], envelope)
        later = browser.responses[first_response + 1:]
        self.assertEqual([(r.url, set_cookie_of(r)) for r in later if set_cookie_of(r)], [])
        log(f"3 fetches and 2 reloads on {owner}, visits 2..6, the app saw JSESSIONID={app_id} "
            f"(and theme=dark) each time; no Set-Cookie")

        # The owner dies: the next load lands elsewhere; that app does not know the id (tether
        # still gives it the raw one) and issues a new one, whose envelope replaces the cookie.
        next(p for p in pods if p.name == owner).kill()
        killed_at = time.monotonic()
        resp, state = load()
        moved = time.monotonic() - killed_at
        new_owner, new_id = state["pod"], state["session"]
        self.assertNotEqual(new_owner, owner)
        self.assertEqual((state["presented"], state["visits"], state["new"]), ([app_id], 1, True))
        self.assertNotEqual(new_id, app_id)
        new_envelope = envelope_of(resp, new_id)
        self.assertNotEqual(new_envelope, envelope)
        after = len(browser.responses)

        seen = fetches(2, "after-kill")
        states = [body for _, _, body in seen]
        resp, state = load()
        states.append(state)
        self.assertEqual([(s["pod"], s["session"], s["presented"], s["visits"], s["new"]) for s in states],
                         [(new_owner, new_id, [new_id], v, False) for v in range(2, 5)])
        new_keys = {key for _, key, _ in seen}
        self.assertEqual(len(new_keys), 1, f"x-tether-key the pod saw: {new_keys}")
        self.assertNotIn("-", new_keys)
        self.assertNotEqual(new_keys, keys)
        self.assertEqual(self.only_cookie(browser, "JSESSIONID")["value"], new_envelope)
        self.assertEqual([(r.url, set_cookie_of(r)) for r in browser.responses[after:] if set_cookie_of(r)], [])

        # Learn mode mints nothing of its own: no tether cookie, ever.
        self.assertEqual(browser.cookies("tether"), [])
        self.assertEqual([r.url for r in browser.responses if "tether=" in set_cookie_of(r)], [])
        log(f"owner {owner} killed: the next load ({moved:.2f}s) on {new_owner}, whose app saw "
            f"JSESSIONID={app_id}, issued {new_id}; its envelope replaced the cookie; 2 fetches and a "
            f"reload stayed there, visits 2..4; no tether cookie")

def main():
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
