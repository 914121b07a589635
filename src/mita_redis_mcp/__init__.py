"""mita-redis-mcp: a safe, prefix-scoped MCP server for debugging a production Redis."""

__version__ = "0.1.0"
