"""A stateful MCP server replica for tests/mcp.rs, built on the MCP Python SDK.

    server.py --name replica-a --port 8081 [--host 127.0.0.1]

Streamable HTTP at /mcp, stateful: the SDK issues an `Mcp-Session-Id` on `initialize`
and answers a session id it does not hold with 404 ("Session not found"). Each replica
holds its sessions in its own memory, as a real stateful MCP server does, so a request
that reaches another replica fails. Besides /mcp:

    GET /healthz    200 "ok" (Envoy's health checks)
Every response names the replica in `x-replica`.
    GET /sessions   the session ids this replica holds (JSON), for the tests to check
                    that a DELETE really ended one

Tools:

    count   this session's counter in this replica, plus one; answers the replica's name,
            the count and the `mcp-session-id` the request carried when it reached us
    notify  sends `notifications/resources/updated` for `mcp-test://<replica>/<session>/<tag>`
            on the session's standalone GET event stream (server-initiated, not tied to
            this request's POST), once that stream is open (waiting up to 5 s for it)
"""

import argparse
import json
import time

import anyio
import mcp_types as types
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--host", default="127.0.0.1")
args = parser.parse_args()

server = MCPServer(args.name)
counters: dict[str, int] = {}


def seen_session(ctx: Context) -> str | None:
    headers = ctx.headers or {}
    return headers.get("mcp-session-id")


def live_sessions() -> dict:
    # The SDK's own table of sessions (no public accessor): what answers 404 when absent.
    return server.session_manager._server_instances


def get_stream_open(session_id: str) -> bool:
    transport = live_sessions().get(session_id)
    # The transport registers the standalone stream under this key while a GET is open.
    return transport is not None and "_GET_stream" in transport._request_streams


@server.tool()
def count(ctx: Context) -> str:
    """Increments this session's counter in this replica."""
    session = seen_session(ctx)
    key = session or "-"
    counters[key] = counters.get(key, 0) + 1
    return json.dumps({"replica": args.name, "count": counters[key], "session_seen": session})


@server.tool()
async def notify(tag: str, ctx: Context) -> str:
    """Sends a resources/updated notification on this session's GET event stream."""
    session = seen_session(ctx)
    deadline = time.monotonic() + 5.0
    while session is not None and not get_stream_open(session) and time.monotonic() < deadline:
        await anyio.sleep(0.02)
    is_open = session is not None and get_stream_open(session)
    uri = f"mcp-test://{args.name}/{session}/{tag}"
    if is_open:
        # No related request: the SDK routes it to the standalone (GET) stream.
        await ctx.session.send_notification(
            types.ResourceUpdatedNotification(params=types.ResourceUpdatedNotificationParams(uri=uri))
        )
    return json.dumps({"replica": args.name, "session_seen": session, "get_stream_open": is_open, "uri": uri})


@server.custom_route("/healthz", methods=["GET"])
async def healthz(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@server.custom_route("/sessions", methods=["GET"])
async def sessions(_: Request) -> JSONResponse:
    return JSONResponse({"replica": args.name, "sessions": sorted(live_sessions())})


def with_replica_header(app):
    """The ASGI app, with `x-replica: <name>` on every response."""
    name = args.name.encode()

    async def wrapped(scope, receive, send):
        async def send_named(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-replica", name)]
            await send(message)

        await app(scope, receive, send_named)

    return wrapped


app = with_replica_header(server.streamable_http_app(streamable_http_path="/mcp", host=args.host))
# Keep-alive longer than Envoy's upstream idle timeout (envoy/mcp.yaml: 60 s), so that Envoy,
# not the server, closes idle connections.
uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_keep_alive=120)
