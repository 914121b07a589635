"""The Streamable HTTP transport: the SDK's app behind a bearer-token guard, run by uvicorn.

Loopback by default; ``Settings`` refuses any other address without a bearer token.
With a token, every request must carry it (``Authorization: Bearer ...``), on loopback
too; it is compared in constant time and never logged. The SDK bounds each request body
(413) and the open sessions (503) and checks the Host and Origin headers against the
names this server answers to (DNS rebinding: 421, 403). No CORS headers are sent, so a
page on another origin cannot read an answer.
"""

from __future__ import annotations

import hmac
import logging

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from mita_redis_mcp.config import Settings, is_loopback_host, is_wildcard_host

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
MAX_BODY_BYTES = 1024 * 1024
MAX_SESSIONS = 16
# Open connections (a session may hold a GET stream besides its POSTs): beyond, 503.
MAX_CONNECTIONS = 4 * MAX_SESSIONS
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
# Seconds that open streams get to finish at shutdown.
SHUTDOWN_GRACE = 5


def endpoint(settings: Settings) -> str:
    """The URL clients connect to."""
    return f"http://{_host_header(settings.http_host)}:{settings.http_port}{MCP_PATH}"


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """Host and Origin allowed: localhost, the listening address (unless it is every
    address) and ``--http-allowed-host`` names, on any port, over http or https."""
    names = list(LOOPBACK_NAMES)
    host = settings.http_host
    if not is_loopback_host(host) and not is_wildcard_host(host):
        names.append(_host_header(host))
    names.extend(settings.http_allowed_hosts)
    hosts = [pattern for name in names for pattern in (name, f"{name}:*")]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"{scheme}://{host}" for host in hosts for scheme in ("http", "https")],
    )


class BearerGuard:
    """ASGI middleware: with a token, a request without it gets 401 before anything
    reads its body; CORS headers never leave."""

    def __init__(self, app: ASGIApp, token: SecretStr | None) -> None:
        self.app = app
        self._token = None if token is None else token.get_secret_value().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            # No WebSocket endpoint: refuse the handshake (403).
            await send({"type": "websocket.close", "code": 1008})
            return
        if self._token is not None and not self._authorized(scope):
            client = scope.get("client") or ("?", 0)
            log.warning(
                "refused %s %s from %s: missing or wrong bearer token",
                scope["method"],
                scope["path"],
                client[0],
            )
            await _unauthorized()(scope, receive, send)
            return

        async def send_without_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if not name.lower().startswith(b"access-control-")
                ]
            await send(message)

        await self.app(scope, receive, send_without_cors)

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        for name, value in scope["headers"]:
            if name.lower() == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                # Constant time: how much of a guess matched must not show in the timing.
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    credentials.strip(), self._token
                )
        return False


def _unauthorized() -> JSONResponse:
    body = {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Unauthorized: missing or wrong bearer token"},
    }
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


def build_http_app(server: MCPServer[None], settings: Settings) -> ASGIApp:
    """The SDK's Streamable HTTP app for ``server``, bounded, behind the token guard.
    Its lifespan starts the SDK's session manager and closes the Redis backend."""
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        max_request_body_size=MAX_BODY_BYTES,
        max_sessions=MAX_SESSIONS,
        transport_security=transport_security(settings),
        host=settings.http_host,
    )
    return BearerGuard(app, settings.http_token)


class HttpProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol (h11), which also stops the keep-alive timer of a
    connection that ends in a reset.

    uvicorn arms that timer after every response and stops it only when the connection
    closes cleanly. The SDK's client closes its connection after each call with the end
    of the answer's stream unread, often with a reset; each such timer kept the closed
    connection, its request and its scope alive for the keep-alive timeout (5 s), and
    the server 15 MB larger over a soak of sequential calls."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None


async def serve_http(server: MCPServer[None], settings: Settings) -> None:
    """Serve ``server`` over Streamable HTTP until SIGINT or SIGTERM."""
    await uvicorn.Server(uvicorn_config(build_http_app(server, settings), settings)).serve()


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """How uvicorn serves ``app``: bounded, quiet, h11 with ``HttpProtocol``."""
    return uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        # Required: the SDK's session manager runs in the app's lifespan.
        lifespan="on",
        # Our logging (stderr); uvicorn's own config sends access lines to stdout.
        log_config=None,
        server_header=False,
        proxy_headers=False,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
        # h11 even where httptools is installed: its protocol has the same timer.
        http=HttpProtocol,
    )


def _host_header(host: str) -> str:
    return f"[{host}]" if ":" in host else host
