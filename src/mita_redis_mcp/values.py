"""Binary-safe, bounded rendering of what Redis holds.

A value goes out as UTF-8 text, as parsed JSON, or as base64 with a flag saying so.
Formats that must never be decoded here (pickle, zlib, msgpack, signed cashews values)
are recognised by their leading bytes and reported by name: nothing is ever unpickled
or decompressed.
"""

from __future__ import annotations

import base64
import codecs
import json
import re
from typing import Literal, TypedDict

from pydantic import BaseModel, Field, JsonValue

from mita_redis_mcp.scope import MAX_KEY_BYTES

Format = Literal["text", "json", "pickle", "zlib", "msgpack", "cashews-signed", "binary"]

_CASHEWS_SIGNED = re.compile(rb"^(md5|sum):[0-9a-f]+_")
_ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")


class RenderedValue(BaseModel):
    """One value (a string, a field, a member), as much of it as the limit allows."""

    encoding: Literal["utf8", "json", "base64"] = Field(
        description="How `value` is written: text, parsed JSON, or base64 of raw bytes"
    )
    value: JsonValue = Field(description="The value (possibly truncated; see `truncated`)")
    format: Format = Field(
        description="What the bytes are. pickle/zlib/msgpack are recognised, never decoded"
    )
    size: int = Field(description="The value's full length in bytes")
    truncated: bool = Field(description="True when only the first bytes are returned")


class KeyRef(BaseModel):
    """A key as text; a binary key also in base64, so it can be passed back exactly."""

    key: str = Field(description="The key; bytes that are not UTF-8 shown as \\x.. escapes")
    key_base64: str | None = Field(
        default=None,
        description="Set only when the key is not valid UTF-8: pass it back as `key` "
        "with key_encoding='base64'",
    )


def sniff(data: bytes) -> Format:
    """Recognise a value's format by its leading bytes, decoding nothing unsafe."""
    if len(data) >= 2 and data[0] == 0x80 and 0x02 <= data[1] <= 0x05:
        return "pickle"
    if data[:2] in _ZLIB_HEADERS:
        return "zlib"
    if _CASHEWS_SIGNED.match(data[:80]):
        return "cashews-signed"
    if data[:1] and (0x80 <= data[0] <= 0x8F or data[0] in (0xDE, 0xDF)):
        return "msgpack"
    stripped = data.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "json"
    # A value cut at the read limit may end inside a character: that is still text.
    return "text" if _utf8_prefix(data, final=False) is not None else "binary"


def render(data: bytes, size: int | None = None) -> RenderedValue:
    """Render ``data``, the first bytes of a value whose full length is ``size``."""
    total = len(data) if size is None else size
    truncated = len(data) < total
    fmt = sniff(data)
    if fmt in ("text", "json"):
        text = _utf8_prefix(data, final=not truncated)
        if text is None:
            fmt = "binary"
        elif fmt == "json" and not truncated:
            try:
                parsed: JsonValue = json.loads(text)
            except (ValueError, RecursionError):
                fmt = "text"
            else:
                return RenderedValue(
                    encoding="json", value=parsed, format="json", size=total, truncated=False
                )
        if text is not None:
            return RenderedValue(
                encoding="utf8", value=text, format=fmt, size=total, truncated=truncated
            )
    return RenderedValue(
        encoding="base64",
        value=base64.b64encode(data).decode("ascii"),
        format=fmt,
        size=total,
        truncated=truncated,
    )


def render_bounded(data: bytes, limit: int) -> RenderedValue:
    """Render at most ``limit`` bytes of a value that was read whole (a field, a member)."""
    return render(data[:limit], len(data))


class KeyRefFields(TypedDict):
    key: str
    key_base64: str | None


def key_ref(key: bytes) -> KeyRefFields:
    """The ``KeyRef`` fields for ``key``. A key longer than any tool accepts is cut,
    so one absurd key name cannot blow up an answer."""
    if len(key) > MAX_KEY_BYTES:
        head = key[:256].decode("utf-8", "backslashreplace")
        return {"key": f"{head}... [{len(key)} bytes: too long to show or use]", "key_base64": None}
    try:
        return {"key": key.decode("utf-8"), "key_base64": None}
    except UnicodeDecodeError:
        return {
            "key": key.decode("utf-8", "backslashreplace"),
            "key_base64": base64.b64encode(key).decode("ascii"),
        }


def _utf8_prefix(data: bytes, *, final: bool = True) -> str | None:
    """Decode UTF-8; with ``final=False`` a character cut at the end is dropped."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        return decoder.decode(data, final=final)
    except UnicodeDecodeError:
        return None
