#!/usr/bin/env python3
"""A demo "pod": answers every request with its name, so stickiness is visible.

    python3 demo/pod.py --name pod-a --port 8081 [--host 127.0.0.1]

GET /healthz -> 200 "ok". Any other request -> 200 "<name>" with headers
x-pod: <name>, and x-seen-host / x-seen-key / x-seen-cookie echoing the steering
headers and the Cookie headers Envoy forwarded (so tests can see what tether set); a
request header x-demo-cache-control comes back as the answer's Cache-Control (an app that
sets its own). A WebSocket upgrade is accepted:
the pod sends one text frame holding its name, then echoes text frames until close.

For browsers (tests/browser/): GET /page.html -> a small HTML page naming the pod
(<body data-pod=...>) whose script `window.demo` makes fetches, a POST-then-POST flow
(/whip, then /listening/start) and a WebSocket. A GET or POST sent with
`Accept: application/json` is answered as JSON {"pod", "method", "path", "cookie"} (the
Cookie it carried), with CORS headers for a credentialed fetch from another origin.

A servlet-like session app under /webapp (for tether's learn mode, where the app issues
its own session id): GET /webapp or /webapp/... with no JSESSIONID this pod knows (none,
or an unknown one: Tomcat's way) starts a session with a new random id (32 hex digits)
and answers `Set-Cookie: JSESSIONID=<id>; Path=/webapp; HttpOnly`; with a known one it
counts the visit and sets no cookie. Sessions live in this pod's memory only, so a
session that reaches another pod starts again there. The answer is JSON {"pod",
"session" (the id in use), "presented" (the JSESSIONID values the request carried, in
order), "visits" (1 on the first), "new", "cookie"} for `Accept: application/json`, else
an HTML page carrying the same in <body data-pod data-session data-presented
data-visits data-new>. (Not /app: tests/config.rs requests /app/x and expects no
Set-Cookie from the pod.) A request header `x-demo-session-header: <name>` switches the app
to an MCP-like header session instead: the id is read from request header <name> and
issued in response header <name>, on every answer of the session as MCP servers do, and no
cookie is set.
"""
import argparse
import base64
import hashlib
import html
import http.server
import json
import socket
import socketserver
import secrets
import struct
import threading

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WEBAPP = "/webapp"  # the session app's context path, and its cookie's Path
SESSION_COOKIE = "JSESSIONID"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # 40 ms stalls otherwise

    def log_message(self, *args):  # quiet
        pass

    def _common_headers(self):
        self.send_header("x-pod", self.server.pod_name)
        for name in ("host", "key"):
            # Every copy, so tests see a client-sent duplicate that got through.
            seen = self.headers.get_all(f"x-tether-{name}") or ["-"]
            self.send_header(f"x-seen-{name}", ",".join(seen))
        # Every Cookie header, joined with " | " (tether may rewrite it: Istio cookie mode).
        self.send_header("x-seen-cookie", " | ".join(self.headers.get_all("cookie") or ["-"]))

    def _answer(self, body_text):
        body = body_text.encode()
        self.send_response(200)
        self._common_headers()
        cache_control = self.headers.get("x-demo-cache-control")
        if cache_control:
            self.send_header("cache-control", cache_control)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _wants_json(self):
        return "application/json" in self.headers.get("accept", "")

    def _answer_json(self):
        body = json.dumps({
            "pod": self.server.pod_name,
            "method": self.command,
            "path": self.path,
            "cookie": " | ".join(self.headers.get_all("cookie") or []),
        }).encode()
        self.send_response(200)
        self._common_headers()
        origin = self.headers.get("origin")
        if origin:  # a credentialed fetch from another origin may read the answer
            self.send_header("access-control-allow-origin", origin)
            self.send_header("access-control-allow-credentials", "true")
            self.send_header("access-control-expose-headers", "x-pod, x-tether, x-tether-session")
            self.send_header("vary", "origin")
        self.send_header("content-type", "application/json")
        self.send_header("cache-control", "no-store")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _page(self):
        name = html.escape(self.server.pod_name, quote=True)
        body = PAGE.replace("{pod}", name).encode()
        self.send_response(200)
        self._common_headers()
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("cache-control", "no-store")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _cookie_values(self, name):
        """Every value of cookie `name` across the request's Cookie headers, in order."""
        values = []
        for header in self.headers.get_all("cookie") or []:
            for pair in header.split(";"):
                key, sep, value = pair.strip().partition("=")
                if sep and key == name:
                    values.append(value)
        return values

    def _webapp(self):
        """The servlet-like session app: a per-pod JSESSIONID and visit counter."""
        by_header = self.headers.get("x-demo-session-header")
        if by_header:
            presented = self.headers.get_all(by_header) or []
        else:
            presented = self._cookie_values(SESSION_COOKIE)
        server = self.server
        with server.sessions_lock:
            # Like Tomcat: the first presented id this pod knows; else a new session.
            session = next((v for v in presented if v in server.sessions), None)
            new = session is None
            if new:
                session = secrets.token_hex(16).upper()
                server.sessions[session] = 0
            server.sessions[session] += 1
            visits = server.sessions[session]
        state = {"pod": server.pod_name, "session": session, "presented": presented,
                 "visits": visits, "new": new,
                 "cookie": " | ".join(self.headers.get_all("cookie") or [])}
        if self._wants_json():
            body, content_type = json.dumps(state).encode(), "application/json"
        else:
            attrs = "".join(
                f' data-{k}="{html.escape(v if isinstance(v, str) else json.dumps(v), quote=True)}"'
                for k, v in state.items() if k != "cookie")
            body = WEBAPP_PAGE.replace("{pod}", html.escape(server.pod_name, quote=True)).replace(
                "{attrs}", attrs).encode()
            content_type = "text/html; charset=utf-8"
        self.send_response(200)
        self._common_headers()
        if by_header:
            self.send_header(by_header, session)
        elif new:
            self.send_header("set-cookie", f"{SESSION_COOKIE}={session}; Path={WEBAPP}; HttpOnly")
        self.send_header("content-type", content_type)
        self.send_header("cache-control", "no-store")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            return self._answer("ok\n")
        if self.path == "/reset":
            # For tests: drop the connection without answering (Envoy's 503 after the
            # upstream accepted the request: upstream_reset_before_response_started).
            self.close_connection = True
            return None
        if self.headers.get("upgrade", "").lower() == "websocket":
            return self._websocket()
        path = self.path.split("?")[0]
        if path == "/page.html":
            return self._page()
        if path == WEBAPP or path.startswith(WEBAPP + "/"):
            return self._webapp()
        if self._wants_json():
            return self._answer_json()
        self._answer(self.server.pod_name + "\n")

    do_HEAD = do_GET

    def do_POST(self):
        length = int(self.headers.get("content-length", "0") or 0)
        self.rfile.read(length)
        if self._wants_json():
            return self._answer_json()
        self._answer(self.server.pod_name + "\n")

    def _websocket(self):
        key = self.headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept)
        self._common_headers()
        self.end_headers()
        self.wfile.flush()
        self._send_frame(self.server.pod_name.encode())
        try:
            while True:
                opcode, payload = self._read_frame()
                if opcode is None or opcode == 0x8:
                    break
                if opcode == 0x1:
                    self._send_frame(payload)
        except (ConnectionError, OSError):
            pass
        self.close_connection = True

    def _send_frame(self, payload):
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([n])
        elif n < 65536:
            header += bytes([126]) + struct.pack(">H", n)
        else:
            header += bytes([127]) + struct.pack(">Q", n)
        self.wfile.write(header + payload)
        self.wfile.flush()

    def _read_exact(self, n):
        data = self.rfile.read(n)
        if len(data) < n:
            raise ConnectionError("short read")
        return data

    def _read_frame(self):
        first = self.rfile.read(2)
        if len(first) < 2:
            return None, b""
        opcode = first[0] & 0x0F
        masked = first[1] & 0x80
        n = first[1] & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read_exact(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read_exact(8))[0]
        mask = self._read_exact(4) if masked else b"\0\0\0\0"
        data = self._read_exact(n)
        return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


# The browser test page. Its script only uses relative URLs, so it works on any origin.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>tether demo: {pod}</title></head>
<body data-pod="{pod}"><h1>{pod}</h1>
<script>
"use strict";
window.demo = {
  // One JSON request; `headers` adds request headers (e.g. the token in header mode).
  async call(method, url, body, headers) {
    const init = { method, headers: Object.assign({ accept: "application/json" }, headers || {}),
                   credentials: "include", cache: "no-store" };
    if (body !== undefined) init.body = body;
    const r = await fetch(url, init);
    const json = await r.json();
    return { status: r.status, pod: r.headers.get("x-pod"), tether: r.headers.get("x-tether"),
             session: r.headers.get("x-tether-session"), body: json };
  },
  // Like a WHIP client: POST the offer, then POST to start listening (seed 000's flow).
  async whipThenStart() {
    const offer = await demo.call("POST", "/whip", "v=0\\r\\no=- 0 0 IN IP4 127.0.0.1\\r\\n",
                                  { "content-type": "application/sdp" });
    const start = await demo.call("POST", "/listening/start", JSON.stringify({ stream: "s1" }),
                                  { "content-type": "application/json" });
    return [offer, start];
  },
  // Opens a WebSocket: the pod's first frame is its name; then one echo; then close.
  ws(path) {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
    return new Promise((resolve, reject) => {
      const sock = new WebSocket(url);
      const got = [];
      const timer = setTimeout(() => { sock.close(); reject(new Error("websocket timeout: " + got)); }, 5000);
      sock.onerror = () => { clearTimeout(timer); reject(new Error("websocket error")); };
      sock.onmessage = (e) => {
        got.push(e.data);
        if (got.length === 1) sock.send("echo-" + e.data);
        else { clearTimeout(timer); sock.close(); resolve({ first: got[0], echo: got[1] }); }
      };
    });
  },
};
</script></body></html>
"""


# The session app's page: its state in data attributes; `webapp.visit(path)` is one JSON
# visit by fetch (the browser sends the cookie; the answer is the app's state).
WEBAPP_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>session app: {pod}</title></head>
<body{attrs}><h1>{pod}</h1>
<script>
"use strict";
window.webapp = {
  async visit(path) {
    const r = await fetch(path, { headers: { accept: "application/json" },
                                  credentials: "same-origin", cache: "no-store" });
    return { status: r.status, pod: r.headers.get("x-pod"), seenKey: r.headers.get("x-seen-key"),
             body: await r.json() };
  },
};
</script></body></html>
"""


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    Server.address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    server = Server((args.host, args.port), Handler)
    server.pod_name = args.name
    server.sessions, server.sessions_lock = {}, threading.Lock()  # the session app's
    print(f"{args.name} listening on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
