"""A do-nothing MCP server on the mcp SDK's defaults: one tool that returns a small
pydantic model without touching Redis. Its latency is the protocol's own cost, the
floor any server built on the SDK starts from.

    python bench/nothing_server.py                 (an MCP server on stdio)
    python bench/nothing_server.py --our-stdio     (the same on mita-redis-mcp's stdio
                                                    transport: the SDK's request path alone)
"""

from __future__ import annotations

import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field


class Nothing(BaseModel):
    """About the shape of a small `get` answer."""

    key: str
    exists: bool
    type: str
    ttl_seconds: float | None = Field(description="Seconds until expiry; null when none")
    value: str | None = Field(default=None, description="The value")


server = MCPServer(name="nothing", version="0")


@server.tool(
    title="Do nothing",
    annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True),
    structured_output=True,
)
async def nothing(key: str) -> Nothing:
    """Return a fixed small answer about `key`; touches nothing."""
    return Nothing(key=key, exists=True, type="string", ttl_seconds=604_800.0, value="blacklisted")


async def _serve_on_our_stdio() -> None:
    from mita_redis_mcp import stdio

    lowlevel = server._lowlevel_server
    async with stdio.streams() as (read, write):
        await lowlevel.run(read, write, lowlevel.create_initialization_options())


if __name__ == "__main__":
    if "--our-stdio" in sys.argv:
        anyio.run(_serve_on_our_stdio)
    else:
        server.run("stdio")
