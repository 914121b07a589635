"""The ``mita-redis-mcp`` command, and ``python -m mita_redis_mcp``.

Start-up imports the MCP SDK and builds the server: some 150,000 objects the cyclic
collector tracks, nearly all of them living as long as the process (pydantic models and
their validators, tool schemas). The collector would walk them again and again while
they are made, about a tenth of the start-up time, and find little to free. So it is
off from the first line until the server is built; ``cli.started`` then freezes what
start-up made (later collections skip it) and turns the collector back on.
"""

import gc


def main() -> int:
    gc.disable()
    from mita_redis_mcp.cli import main as cli_main

    try:
        return cli_main()
    finally:
        gc.enable()  # whatever the command (``cli.started`` did this already for serve)


if __name__ == "__main__":
    raise SystemExit(main())
