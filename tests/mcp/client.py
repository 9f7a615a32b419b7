"""An MCP client for tests/mcp.rs, built on the MCP Python SDK (streamable HTTP transport,
`ClientSession`). It only reports: one JSON object per line on stdout, and the Rust test
asserts on them.

    client.py URL [--http2] [--scenario session|owner-killed] [--clients N] [--calls N]

--http2       HTTP/2 with prior knowledge (h2c) through the httpx2 client given to the SDK
--scenario    session: each client initializes, calls `count` --calls times, asks for a
                  notification on its GET event stream, then closes (the SDK sends DELETE),
                  then sends one more request with the id it held (the session must be gone)
              owner-killed: one client initializes and calls `count` --calls times, prints
                  {"event": "ready"} and waits for a line on stdin (the test kills the
                  replica meanwhile), calls `count` once more (expected to fail), then opens
                  a new session (phase 1) and runs the session scenario on it
--clients     concurrent clients (session scenario)
--calls       `count` calls per session (owner-killed: before the kill)
--calls-after owner-killed: `count` calls of the new session
--no-notify   skip the notification step (the controls, where the GET stream fails)

Lines (every one has "event", "client" and "phase", a session attempt of that client):
    http          one HTTP exchange the SDK made: method, JSON-RPC method (rpc), status, the
                  replica that answered (its x-replica header), HTTP version, the mcp-session-id it sent (sent_session) and got back
                  (got_session), whether the response set a cookie
    initialized   the server's name as initialize answered it
    call          one `count` call: ok, and replica, count, session_seen (the id the server
                  got), or the error's code and message
    notification  the `notify` tool's answer and the notifications/resources/updated URIs
                  that arrived (on the GET stream: the server sends them nowhere else)
    closed        the SDK's transport closed (after its DELETE)
    after_delete  status and body of one request sent with the old id after the DELETE
    ready         (owner-killed) phase 0 is done; waiting for stdin
    error         an exception no step expected, with its text
Every wait is bounded: SDK requests time out after 20 s, a notification after 10 s, the
owner-killed pause after 60 s, the whole run after --deadline seconds (exit status 3).
"""

import argparse
import json
import sys
import traceback

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("--http2", action="store_true")
parser.add_argument("--scenario", default="session", choices=["session", "owner-killed"])
parser.add_argument("--clients", type=int, default=1)
parser.add_argument("--calls", type=int, default=20)
parser.add_argument("--calls-after", type=int, default=20)
parser.add_argument("--no-notify", action="store_true")
parser.add_argument("--deadline", type=float, default=90.0)
args = parser.parse_args()

REQUEST_TIMEOUT = 20.0


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def http_client(client: int, phase: int, held: dict) -> httpx2.AsyncClient:
    """The SDK's HTTP client: h2c with prior knowledge for --http2, no cookies kept, and a
    hook that reports every response (headers arrive before an event stream's body) and
    keeps the last mcp-session-id the SDK sent in `held`."""

    async def on_response(response: httpx2.Response) -> None:
        request = response.request
        if request.headers.get("mcp-session-id"):
            held["id"] = request.headers["mcp-session-id"]
        rpc = None
        if request.method == "POST":
            try:
                rpc = json.loads(request.content).get("method")
            except (ValueError, AttributeError, httpx2.RequestNotRead):
                rpc = "?"
        emit(
            event="http",
            client=client,
            phase=phase,
            method=request.method,
            rpc=rpc,
            status=response.status_code,
            replica=response.headers.get("x-replica"),
            http_version=response.http_version,
            sent_session=request.headers.get("mcp-session-id"),
            got_session=response.headers.get("mcp-session-id"),
            set_cookie=response.headers.get("set-cookie"),
        )

    return httpx2.AsyncClient(
        http1=not args.http2,
        http2=args.http2,
        timeout=httpx2.Timeout(REQUEST_TIMEOUT, read=300.0),
        event_hooks={"response": [on_response]},
        # A cookie jar that keeps nothing: tether's header mode needs no cookie.
        cookies=NoCookies(),
    )


class NoCookies(httpx2.Cookies):
    def extract_cookies(self, response: httpx2.Response) -> None:
        pass


async def count_call(session: ClientSession, client: int, phase: int, n: int) -> bool:
    try:
        result = await session.call_tool("count", {})
    except MCPError as e:
        emit(event="call", client=client, phase=phase, n=n, ok=False, code=e.code, message=e.error.message)
        return False
    if result.is_error:
        emit(event="call", client=client, phase=phase, n=n, ok=False, code=None, message=str(result.content))
        return False
    answer = json.loads(result.content[0].text)
    emit(event="call", client=client, phase=phase, n=n, ok=True, **answer)
    return True


async def ask_notification(session: ClientSession, arrived: list, got: anyio.Event, client: int, phase: int):
    try:
        result = await session.call_tool("notify", {"tag": f"c{client}p{phase}"})
        answer = json.loads(result.content[0].text)
    except MCPError as e:
        emit(event="notification", client=client, phase=phase, ok=False, code=e.code, message=e.error.message)
        return
    with anyio.move_on_after(10.0):
        await got.wait()
    emit(event="notification", client=client, phase=phase, ok=True, tool=answer, arrived=list(arrived))


async def run_session(url: str, client: int, phase: int, calls: int, pause=None) -> None:
    """One session: initialize, `calls` count calls, a GET-stream notification, close."""
    arrived: list[str] = []
    got = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            arrived.append(message.params.uri)
            got.set()
        elif isinstance(message, Exception):
            emit(event="error", client=client, phase=phase, where="message_handler", text=repr(message))

    held: dict = {}
    async with http_client(client, phase, held) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT, message_handler=on_message) as session:
                init = await session.initialize()
                emit(event="initialized", client=client, phase=phase, server=init.server_info.name)
                for n in range(1, calls + 1):
                    await count_call(session, client, phase, n)
                if pause is not None:
                    await pause(session)
                elif not args.no_notify:
                    await ask_notification(session, arrived, got, client, phase)
        emit(event="closed", client=client, phase=phase)
        # The id the SDK held, as its last request (the DELETE) sent it.
        if "id" in held:
            await after_delete(http, url, held["id"], client, phase)


async def after_delete(http: httpx2.AsyncClient, url: str, held_id: str, client: int, phase: int) -> None:
    response = await http.post(
        url,
        json={"jsonrpc": "2.0", "id": 99, "method": "tools/list"},
        headers={
            "accept": "application/json, text/event-stream",
            "mcp-session-id": held_id,
            "mcp-protocol-version": "2025-11-25",
        },
    )
    emit(
        event="after_delete",
        client=client,
        phase=phase,
        status=response.status_code,
        replica=response.headers.get("x-replica"),
        body=response.text[:300],
    )


async def session_scenario() -> None:
    async def one(client: int) -> None:
        try:
            await run_session(args.url, client, 0, args.calls)
        except Exception as e:
            emit(event="error", client=client, phase=0, where="session", text=describe(e))

    async with anyio.create_task_group() as tg:
        for client in range(args.clients):
            tg.start_soon(one, client)


async def owner_killed_scenario() -> None:
    async def pause(session: ClientSession) -> None:
        emit(event="ready", client=0, phase=0)
        with anyio.move_on_after(60.0) as scope:
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if scope.cancelled_caught or not line:
            emit(event="error", client=0, phase=0, where="pause", text="no go-ahead on stdin within 60 s")
            return
        # The owner is gone: the next call of this session.
        await count_call(session, 0, 0, args.calls + 1)

    try:
        await run_session(args.url, 0, 0, args.calls, pause=pause)
    except Exception as e:
        emit(event="error", client=0, phase=0, where="session", text=describe(e))
    try:
        await run_session(args.url, 0, 1, args.calls_after)
    except Exception as e:
        emit(event="error", client=0, phase=1, where="session", text=describe(e))


def describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(describe(x) for x in e.exceptions)
    return "".join(traceback.format_exception_only(e)).strip()


async def main() -> None:
    with anyio.move_on_after(args.deadline) as scope:
        if args.scenario == "session":
            await session_scenario()
        else:
            await owner_killed_scenario()
    if scope.cancelled_caught:
        emit(event="error", client=None, phase=None, where="deadline", text=f"not done after {args.deadline} s")
        sys.exit(3)


anyio.run(main)
