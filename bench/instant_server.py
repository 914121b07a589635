"""An MCP server that answers at once, on the standard library alone (no SDK): one
JSON-RPC message per line on stdin, each answer one line on stdout, flushed.

Why it exists: with it, the time of a call is the SDK client's own cost plus a pipe
round trip, the floor no server can go under, whatever it is written in. The
do-nothing SDK server (``nothing_server.py``) adds the SDK server's cost on top.

    python bench/instant_server.py      (an MCP server on stdio)
"""

from __future__ import annotations

import json
import sys
from typing import Any

TOOL = {
    "name": "instant",
    "description": "Return a fixed small answer at once; touches nothing.",
    "inputSchema": {"type": "object", "properties": {"key": {"type": "string"}}},
}
# Shaped like a small `get` answer; built once, as nothing here should cost time.
ANSWER = {
    "key": "mita:blacklist:token:bench",
    "exists": True,
    "type": "string",
    "ttl_seconds": 604800.0,
    "value": "blacklisted",
}
CALL_RESULT = {
    "content": [{"type": "text", "text": json.dumps(ANSWER)}],
    "structuredContent": ANSWER,
    "isError": False,
}


def answer(message: dict[str, Any]) -> dict[str, Any] | None:
    """The reply to one message, or None for a notification (no "id") or a reply."""
    if "id" not in message or "method" not in message:
        return None
    method = message["method"]
    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message["id"]}
    if method == "initialize":
        params = message.get("params") or {}
        reply["result"] = {
            "protocolVersion": params.get("protocolVersion"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "instant", "version": "0"},
        }
    elif method == "tools/list":
        reply["result"] = {"tools": [TOOL]}
    elif method == "tools/call":
        reply["result"] = CALL_RESULT
    elif method == "ping":
        reply["result"] = {}
    else:
        reply["error"] = {"code": -32601, "message": f"Method not found: {method}"}
    return reply


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(json.loads(line))
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
