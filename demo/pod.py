#!/usr/bin/env python3
"""A demo "pod": answers every request with its name, so stickiness is visible.

    python3 demo/pod.py --name pod-a --port 8081 [--host 127.0.0.1]

GET /healthz -> 200 "ok". Any other request -> 200 "<name>" with headers
x-pod: <name>, and x-seen-host / x-seen-key / x-seen-cookie echoing the steering
headers and the Cookie headers Envoy forwarded (so tests can see what tether set). A WebSocket upgrade is accepted:
the pod sends one text frame holding its name, then echoes text frames until close.
"""
import argparse
import base64
import hashlib
import http.server
import socket
import socketserver
import struct

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path == "/healthz":
            return self._answer("ok\n")
        if self.headers.get("upgrade", "").lower() == "websocket":
            return self._websocket()
        self._answer(self.server.pod_name + "\n")

    do_HEAD = do_GET

    def do_POST(self):
        length = int(self.headers.get("content-length", "0") or 0)
        self.rfile.read(length)
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
    print(f"{args.name} listening on {args.host}:{args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
