"""python -m mita_redis_mcp"""

from mita_redis_mcp.cli import main

raise SystemExit(main())
