"""A do-nothing MCP server on the mcp SDK's defaults: one tool that returns a small
pydantic model without touching Redis. Its latency is the protocol's own cost, the
floor any server built on the SDK starts from.

    python bench/nothing_server.py      (an MCP server on stdio)
"""

from __future__ import annotations

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


if __name__ == "__main__":
    server.run("stdio")
