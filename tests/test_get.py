"""get: every type, bounded windows followed by cursor to the end, and value rendering."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis
from mcp import Client

from mita_redis_mcp.app import App
from mita_redis_mcp.server import build_server
from tests.conftest import (
    Answer,
    MakeApp,
    Target,
    answer_of,
    app_for,
    call_tool,
    error_text,
    follow,
)

pytestmark = pytest.mark.anyio


# OBJECT ENCODING values any supported server version may give (fakeredis gives none).
ENCODINGS = {
    "string": {"embstr", "raw", "int"},
    "hash": {"listpack", "ziplist", "hashtable"},
    "list": {"listpack", "quicklist", "ziplist"},
    "set": {"listpack", "intset", "hashtable"},
    "zset": {"listpack", "ziplist", "skiplist"},
    "stream": {"stream"},
}
# Where each type's value goes in the answer.
BODY = {
    "string": "value",
    "hash": "fields",
    "list": "elements",
    "set": "members",
    "zset": "members",
    "stream": "entries",
}


async def get(app: App, **arguments: Any) -> Answer:
    return answer_of(await call_tool(app, "get", arguments))


async def read_all(app: App, most_calls: int = 200, **arguments: Any) -> list[Answer]:
    return await follow(app, "get", most_calls, **arguments)


def text(rendered: Answer) -> str:
    """A rendered collection element, whole, as text."""
    assert rendered["encoding"] == "utf8", rendered
    assert rendered["truncated"] is False
    value = rendered["value"]
    assert isinstance(value, str)
    return value


def raw_of(rendered: Answer) -> bytes:
    """The bytes one window of a string holds, whatever its encoding."""
    value = rendered["value"]
    assert isinstance(value, str)
    if rendered["encoding"] == "base64":
        return base64.b64decode(value)
    assert rendered["encoding"] == "utf8", rendered
    return value.encode("utf-8")


# -- every type ------------------------------------------------------------------------


def _seed_string(raw: redis.Redis) -> int:
    raw.set("app:k", "hello", px=100_000)
    return 5


def _seed_hash(raw: redis.Redis) -> int:
    raw.hset("app:k", mapping={"a": "1", "b": "2", "c": "3"})
    return 3


def _seed_list(raw: redis.Redis) -> int:
    raw.rpush("app:k", "x", "y", "z", "w")
    return 4


def _seed_set(raw: redis.Redis) -> int:
    raw.sadd("app:k", "red", "green")
    return 2


def _seed_zset(raw: redis.Redis) -> int:
    raw.zadd("app:k", {"low": 1.0, "high": 2.5})
    return 2


def _seed_stream(raw: redis.Redis) -> int:
    for i in range(3):
        raw.xadd("app:k", {"n": str(i)})
    return 3


SEEDERS: dict[str, Callable[[redis.Redis], int]] = {
    "string": _seed_string,
    "hash": _seed_hash,
    "list": _seed_list,
    "set": _seed_set,
    "zset": _seed_zset,
    "stream": _seed_stream,
}


@pytest.mark.parametrize("kind", list(SEEDERS))
async def test_get_reports_type_ttl_size_encoding(
    make_app: MakeApp, target: Target, kind: str
) -> None:
    size = SEEDERS[kind](target.raw)
    if kind != "string":
        target.raw.expire("app:k", 500)
    answer = await get(make_app(), key="app:k")
    assert answer["exists"] is True
    assert answer["type"] == kind
    assert answer["size"] == size
    assert answer["complete"] is True
    assert answer["next_cursor"] is None
    ttl = answer["ttl_seconds"]
    assert ttl is not None
    assert 0 < ttl <= (100 if kind == "string" else 500)
    if target.name == "fakeredis":
        assert answer["encoding"] is None or isinstance(answer["encoding"], str)
    else:
        assert answer["encoding"] in ENCODINGS[kind]
    for name in set(BODY.values()):
        assert (answer[name] is not None) == (name == BODY[kind]), name


async def test_get_without_ttl_reports_null(make_app: MakeApp, target: Target) -> None:
    target.raw.hset("app:h", "f", "v")
    answer = await get(make_app(), key="app:h")
    assert answer["ttl_seconds"] is None
    assert answer["fields"] == [
        {
            "field": {
                "encoding": "utf8",
                "value": "f",
                "format": "text",
                "size": 1,
                "truncated": False,
            },
            "value": {
                "encoding": "utf8",
                "value": "v",
                "format": "text",
                "size": 1,
                "truncated": False,
            },
        }
    ]


async def test_get_missing_key_is_not_an_error(make_app: MakeApp, target: Target) -> None:
    answer = await get(make_app(), key="app:nothing-here")
    assert answer["exists"] is False
    assert answer["type"] == "none"
    assert answer["ttl_seconds"] is None
    assert answer["size"] == 0
    assert answer["value"] is None
    assert answer["complete"] is True


# -- windows followed to the end -----------------------------------------------------------


async def test_get_hash_in_pages_returns_every_field(make_app: MakeApp, target: Target) -> None:
    target.raw.hset("app:big-hash", mapping={f"field-{i:03}": f"value-{i}" for i in range(300)})
    expected = {f"field-{i:03}": f"value-{i}" for i in range(300)}
    answers = await read_all(make_app(), key="app:big-hash", count=40)
    seen: list[tuple[str, str]] = []
    for answer in answers:
        assert answer["size"] == 300
        assert len(answer["fields"]) <= 40
        seen += [(text(f["field"]), text(f["value"])) for f in answer["fields"]]
    assert len(answers) > 1
    # HSCAN may repeat a field, never lose one.
    assert set(seen) == set(expected.items())


async def test_get_set_in_pages_returns_every_member(make_app: MakeApp, target: Target) -> None:
    expected = {f"member-{i:04}" for i in range(1000)}
    target.raw.sadd("app:big-set", *expected)
    answers = await read_all(make_app(), key="app:big-set", count=100)
    seen: list[str] = []
    for answer in answers:
        assert answer["size"] == 1000
        assert len(answer["members"]) <= 100
        seen += [text(m["member"]) for m in answer["members"]]
        assert all(m["score"] is None for m in answer["members"])
    assert len(answers) >= 10
    assert set(seen) == expected


async def test_get_list_in_pages_returns_every_element_once_in_order(
    make_app: MakeApp, target: Target
) -> None:
    expected = [f"element-{i}" for i in range(500)]
    target.raw.rpush("app:big-list", *expected)
    answers = await read_all(make_app(), key="app:big-list", count=100)
    elements = [e for answer in answers for e in answer["elements"]]
    assert [e["index"] for e in elements] == list(range(500))
    assert [text(e["value"]) for e in elements] == expected
    assert len(answers) == 5


async def test_get_zset_in_pages_returns_every_member_once_in_order(
    make_app: MakeApp, target: Target
) -> None:
    expected = [(f"player-{i:03}", i * 1.5) for i in range(250)]
    target.raw.zadd("app:board", dict(expected))
    answers = await read_all(make_app(), key="app:board", count=60)
    members = [(text(m["member"]), m["score"]) for a in answers for m in a["members"]]
    assert members == expected
    assert all(a["size"] == 250 for a in answers)


async def test_get_stream_in_pages_returns_every_entry_once_in_order(
    make_app: MakeApp, target: Target
) -> None:
    for i in range(130):
        target.raw.xadd("app:events", {"seq": str(i), "kind": "login"})
    stored = cast("list[tuple[bytes, Any]]", target.raw.xrange("app:events"))
    expected = [entry_id.decode() for entry_id, _ in stored]
    answers = await read_all(make_app(), key="app:events", count=40)
    entries = [e for answer in answers for e in answer["entries"]]
    assert [e["id"] for e in entries] == expected
    assert [text(e["fields"][0]["value"]) for e in entries] == [str(i) for i in range(130)]
    assert all(a["size"] == 130 for a in answers)


async def test_get_string_windows_rebuild_the_whole_value(
    make_app: MakeApp, target: Target
) -> None:
    # Multi-byte characters of every length, so window ends fall inside characters.
    value = ("ascii é € 𝄞 " * 300).encode()
    target.raw.set("app:long", value)
    answers = await read_all(make_app(max_value_bytes=100), key="app:long")
    assert len(answers) > 10
    rebuilt = b""
    for answer in answers:
        assert answer["size"] == len(value)
        assert answer["value_offset"] == len(rebuilt)
        # Every window stays readable text: none starts inside a character.
        assert answer["value"]["encoding"] == "utf8", answer["value"]
        assert len(raw_of(answer["value"])) <= 100
        rebuilt += raw_of(answer["value"])
    assert rebuilt == value


async def test_get_binary_string_windows_rebuild_the_whole_value(
    make_app: MakeApp, target: Target
) -> None:
    value = bytes(range(256)) * 10
    target.raw.set("app:blob", value)
    answers = await read_all(make_app(max_value_bytes=300), key="app:blob")
    assert b"".join(raw_of(a["value"]) for a in answers) == value
    assert all(a["value"]["encoding"] == "base64" for a in answers)


async def test_get_multibyte_character_cut_at_the_limit(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:price", "abcd€ and more")
    app = make_app(max_value_bytes=5)
    first = await get(app, key="app:price")
    assert first["value"] == {
        "encoding": "utf8",
        "value": "abcd",
        "format": "text",
        "size": len("abcd€ and more".encode()),
        "truncated": True,
    }
    second = await get(app, key="app:price", cursor=first["next_cursor"])
    assert second["value"]["encoding"] == "utf8"
    assert second["value"]["value"].startswith("€")
    assert second["value_offset"] == 4


# -- value rendering ---------------------------------------------------------------------


async def test_get_renders_utf8_text(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:t", "héllo wörld ✓")
    value = (await get(make_app(), key="app:t"))["value"]
    assert value == {
        "encoding": "utf8",
        "value": "héllo wörld ✓",
        "format": "text",
        "size": len("héllo wörld ✓".encode()),
        "truncated": False,
    }


async def test_get_parses_json(make_app: MakeApp, target: Target) -> None:
    document = {"user": 42, "roles": ["admin", "ops"], "meta": {"active": True, "n": None}}
    target.raw.set("app:j", json.dumps(document))
    value = (await get(make_app(), key="app:j"))["value"]
    assert value["encoding"] == "json"
    assert value["format"] == "json"
    assert value["value"] == document
    assert value["truncated"] is False


async def test_get_json_cut_by_the_limit_is_text_not_parsed(
    make_app: MakeApp, target: Target
) -> None:
    document = json.dumps({"items": list(range(100))})
    target.raw.set("app:j", document)
    value = (await get(make_app(max_value_bytes=20), key="app:j"))["value"]
    assert value == {
        "encoding": "utf8",
        "value": document[:20],
        "format": "json",
        "size": len(document),
        "truncated": True,
    }


async def test_get_binary_value_is_base64(make_app: MakeApp, target: Target) -> None:
    data = b"\x00\xff\xfe\x01binary\xc3"
    target.raw.set("app:b", data)
    value = (await get(make_app(), key="app:b"))["value"]
    assert value["encoding"] == "base64"
    assert value["format"] == "binary"
    assert base64.b64decode(value["value"]) == data


async def test_get_never_unpickles(make_app: MakeApp, target: Target) -> None:
    secret = "pickled-session-token-4d1c"
    payload = pickle.dumps({"session": secret, "roles": ["admin"]})
    target.raw.set("app:pickle", payload)
    result = await call_tool(make_app(), "get", {"key": "app:pickle"})
    value = answer_of(result)["value"]
    assert value["format"] == "pickle"
    assert value["encoding"] == "base64"
    assert base64.b64decode(value["value"]) == payload
    # Neither the structured answer nor the text the model reads holds unpickled data.
    assert secret not in json.dumps(result.structured_content)
    assert all(secret not in getattr(block, "text", "") for block in result.content)


async def test_get_recognises_zlib_without_decompressing(make_app: MakeApp, target: Target) -> None:
    plain = b"compressed-plaintext " * 20
    target.raw.set("app:z", zlib.compress(plain))
    result = await call_tool(make_app(), "get", {"key": "app:z"})
    value = answer_of(result)["value"]
    assert value["format"] == "zlib"
    assert value["encoding"] == "base64"
    assert "compressed-plaintext" not in json.dumps(result.structured_content)


async def test_get_recognises_msgpack_without_decoding(make_app: MakeApp, target: Target) -> None:
    packed = b"\x82\xa4user\xa5alice\xa4role\xa5admin"  # msgpack of {"user": ..., "role": ...}
    target.raw.set("app:m", packed)
    value = (await get(make_app(), key="app:m"))["value"]
    assert value["format"] == "msgpack"
    assert value["encoding"] == "base64"
    assert base64.b64decode(value["value"]) == packed


async def test_get_long_collection_element_is_truncated(make_app: MakeApp, target: Target) -> None:
    target.raw.hset("app:h", "f", "x" * 5000)
    answer = await get(make_app(max_value_bytes=1000), key="app:h", count=1)
    value = answer["fields"][0]["value"]
    assert value["truncated"] is True
    assert value["size"] == 5000
    assert value["value"] == "x" * 1000


# -- binary keys -------------------------------------------------------------------------


async def test_get_binary_key_round_trips_through_base64(make_app: MakeApp, target: Target) -> None:
    key = b"app:\xff\xfe-bin\x00ary"
    target.raw.rpush(key, "one", "two")
    app = make_app()
    listed = answer_of(await call_tool(app, "keys", {"pattern": "app:*"}))["keys"]
    assert len(listed) == 1
    key_base64 = listed[0]["key_base64"]
    assert key_base64 == base64.b64encode(key).decode()
    answer = await get(app, key=key_base64, key_encoding="base64")
    assert answer["exists"] is True
    assert answer["key_base64"] == key_base64
    assert [text(e["value"]) for e in answer["elements"]] == ["one", "two"]
    # The escaped display text names other bytes: it does not reach the binary key.
    shown = await get(app, key=listed[0]["key"])
    assert shown["exists"] is False


async def test_get_utf8_key_has_no_base64(make_app: MakeApp, target: Target) -> None:
    target.raw.set("app:clé", "v")
    answer = await get(make_app(), key="app:clé")
    assert answer["key"] == "app:clé"
    assert answer["key_base64"] is None


async def test_get_refuses_invalid_base64_key(make_app: MakeApp, target: Target) -> None:
    result = await call_tool(make_app(), "get", {"key": "app:!!", "key_encoding": "base64"})
    assert "not valid base64" in error_text(result)


# -- cursors and counts ----------------------------------------------------------------


async def test_get_refuses_malformed_cursor(make_app: MakeApp, target: Target) -> None:
    target.raw.rpush("app:l", *range(10))
    result = await call_tool(make_app(), "get", {"key": "app:l", "cursor": "not-a-cursor"})
    assert "cursor is malformed" in error_text(result)


async def test_get_refuses_cursor_from_another_key(make_app: MakeApp, target: Target) -> None:
    for n in (1, 2):
        target.raw.set(f"app:string{n}", "x" * 50)
        target.raw.rpush(f"app:list{n}", *range(50))
        target.raw.hset(f"app:hash{n}", mapping={f"f{i}": i for i in range(50)})
        for i in range(50):
            target.raw.xadd(f"app:stream{n}", {"i": i})
    app = make_app(max_value_bytes=10)
    async with Client(build_server(app)) as client:
        for kind in ("string", "list", "hash", "stream"):
            first = answer_of(await client.call_tool("get", {"key": f"app:{kind}1", "count": 5}))
            assert first["next_cursor"] is not None, kind
            result = await client.call_tool(
                "get", {"key": f"app:{kind}2", "cursor": first["next_cursor"]}
            )
            assert "belongs to a different call" in error_text(result), kind


async def test_get_refuses_stream_cursor_after_the_key_changed_type(
    make_app: MakeApp, target: Target
) -> None:
    for i in range(10):
        target.raw.xadd("app:k", {"i": i})
    app = make_app()
    cursor = (await get(app, key="app:k", count=3))["next_cursor"]
    assert cursor is not None
    target.raw.delete("app:k")
    target.raw.hset("app:k", mapping={"a": "1", "b": "2"})
    result = await call_tool(app, "get", {"key": "app:k", "cursor": cursor})
    message = error_text(result)
    assert "cursor does not fit" in message
    assert "Traceback" not in message


async def test_get_count_is_capped_by_max_items(make_app: MakeApp, target: Target) -> None:
    target.raw.rpush("app:l", *range(50))
    target.raw.hset("app:h", mapping={f"f{i}": i for i in range(300)})
    app = make_app(max_items=10)
    listed = await get(app, key="app:l", count=50)
    assert len(listed["elements"]) == 10
    assert listed["complete"] is False
    hashed = await get(app, key="app:h", count=5000)
    assert len(hashed["fields"]) == 10
    assert hashed["complete"] is False


async def test_get_large_count_never_sends_a_scan_page_over_1000(
    make_app: MakeApp, target: Target
) -> None:
    """A `count` of thousands is read in HSCAN/SSCAN pages of at most 1000 (one HSCAN
    COUNT 10000 of a million-field hash held Redis 12.6 ms), and the cursor handed back
    inside a page is one the next call accepts."""
    target.raw.hset("app:wide-hash", mapping={f"f{i:05}": i for i in range(7000)})
    target.raw.sadd("app:wide-set", *[f"m{i:05}" for i in range(7000)])
    app = make_app(max_items=2500)
    counts: list[int] = []
    backend = app.backend
    for name in ("hscan", "sscan"):
        original = getattr(backend, name)

        async def recording(key: bytes, cursor: int, count: int, _read: Any = original) -> Any:
            counts.append(count)
            return await _read(key, cursor, count)

        setattr(backend, name, recording)
    cases: list[tuple[str, str, Callable[[Answer], str]]] = [
        ("app:wide-hash", "fields", lambda f: text(f["field"])),
        ("app:wide-set", "members", lambda m: text(m["member"])),
    ]
    for key, body, item in cases:
        answers = await read_all(app, key=key, count=2500)
        assert all(len(answer[body]) <= 2500 for answer in answers)
        assert len({item(entry) for answer in answers for entry in answer[body]}) == 7000
    assert counts
    assert max(counts) <= 1000, counts


async def test_get_default_count_is_max_items(make_app: MakeApp, target: Target) -> None:
    target.raw.rpush("app:l", *range(50))
    answer = await get(make_app(max_items=7), key="app:l")
    assert [e["index"] for e in answer["elements"]] == list(range(7))


async def test_get_after_redis_dropped_the_connection_answers_on_a_new_one(
    real_target: Target,
) -> None:
    """get's one round trip goes over a pooled connection of its own making: when Redis
    has closed that connection (a restart, CLIENT KILL, an idle timeout), the call is
    tried once more on a new one instead of failing."""
    real_target.raw.set("app:k", "before", ex=100)
    app = app_for(real_target)
    try:
        async with Client(build_server(app)) as client:
            first = answer_of(await client.call_tool("get", {"key": "app:k"}))
            assert first["value"]["value"] == "before"
            killed = real_target.raw.client_kill_filter(_type="normal", skipme=True)
            assert killed >= 1
            real_target.raw.set("app:k", "after", ex=100)
            second = answer_of(await client.call_tool("get", {"key": "app:k"}))
            assert second["value"]["value"] == "after"
            assert second["commands"] == 5
    finally:
        await app.backend.close()
