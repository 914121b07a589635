from __future__ import annotations

import pytest

from tests.conftest import MakeApp, Target, call_tool, error_text

pytestmark = pytest.mark.anyio


async def test_get_string(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:greeting", "hello")
    result = await call_tool(make_app(), "get", {"key": "app:greeting"})
    assert not result.is_error
    assert result.structured_content is not None
    assert result.structured_content["value"]["value"] == "hello"


async def test_get_refuses_other_prefix(make_app: MakeApp, target: Target) -> None:
    target.raw.set("other:secret", "x")
    result = await call_tool(make_app(), "get", {"key": "other:secret"})
    assert "outside the allowed prefixes" in error_text(result)
