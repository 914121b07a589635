"""Resumable walks over SCAN-like commands, behind one opaque cursor string.

A SCAN page can hold more matches than a call may return. Dropping the extra ones
would lose keys; returning them all would break the limit. So a cursor can point
*into* a page: it names the page's SCAN cursor and COUNT, how many matches of that
page were already returned, and a fingerprint of them. Resuming re-reads the same
page and skips those matches when the fingerprint agrees; if the page changed in
between (Redis rehashed), the whole page is returned again. A walk may therefore
repeat a key, as SCAN itself may, but never misses one that was present throughout.

The cursor also carries a short hash of what was being walked (the pattern, the
key), so a cursor passed back with other arguments is refused, not misread.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from mita_redis_mcp.errors import InvalidInput

T = TypeVar("T")

MAX_PAGE_COUNT = 1000
# SCAN's own cursors are 64-bit; a cluster walk's combined cursor (``cluster``) is wider.
# The backend checks the cursor it is given against what it sends.
_MAX_SCAN_CURSOR = 2**128 - 1
_FORMAT = re.compile(
    r"^(?P<plan>\d{1,4})\.(?P<cursor>\d{1,39}(?:-\d{1,20})?)\.(?P<count>\d{1,7})"
    r"\.(?P<skip>\d{1,7})\.(?P<fp>[0-9a-f]{12}|-)\.(?P<bind>[0-9a-f]{8})$"
)


MIN_TABLE_PAGE = 10


def table_page(dbsize: int | None) -> int:
    """SCAN COUNT for walks over the whole table (one per prefix): on a small database,
    pages of its size finish a prefix in one call and charge the budget about what
    Redis examined, not a full page per prefix."""
    if dbsize is None:
        return MAX_PAGE_COUNT
    return min(MAX_PAGE_COUNT, max(MIN_TABLE_PAGE, dbsize))


@dataclass(frozen=True)
class Position:
    """Where a walk stands: plan (prefix) index, SCAN cursor, and a place in a page."""

    plan: int = 0
    cursor: str = "0"
    count: int = 0
    skip: int = 0
    fingerprint: str = "-"

    def encode(self, bind: str) -> str:
        return f"{self.plan}.{self.cursor}.{self.count}.{self.skip}.{self.fingerprint}.{bind}"


def binding(*parts: bytes) -> str:
    """A short hash of the arguments a cursor belongs to."""
    return hashlib.blake2b(b"\0".join(parts), digest_size=4).hexdigest()


def decode(text: str | None, bind: str, *, plans: int = 1) -> Position:
    """Parse a cursor a tool returned earlier; ``None`` starts a new walk."""
    if text is None or text == "":
        return Position()
    match = _FORMAT.match(text)
    if match is None:
        raise InvalidInput("the cursor is malformed: pass back next_cursor exactly as returned")
    if match["bind"] != bind:
        raise InvalidInput(
            "this cursor belongs to a different call (other pattern, key or type): "
            "repeat the same arguments, or start again without a cursor"
        )
    position = Position(
        int(match["plan"]), match["cursor"], int(match["count"]), int(match["skip"]), match["fp"]
    )
    head = position.cursor.split("-", 1)[0]
    if position.plan >= plans or int(head) > _MAX_SCAN_CURSOR or position.count > MAX_PAGE_COUNT:
        raise InvalidInput("the cursor is out of range: pass back next_cursor exactly as returned")
    return position


@dataclass
class Walk(Generic[T]):
    """What one bounded walk found."""

    items: list[T]
    next: Position | None
    scanned: int

    @property
    def complete(self) -> bool:
        return self.next is None


FetchPage = Callable[[int, int, int], Awaitable[tuple[int, Sequence[T]]]]


async def walk(
    fetch: FetchPage[T],
    *,
    start: Position,
    plans: int,
    limit: int,
    budget: int,
    identity: Callable[[T], bytes],
    accept: Callable[[int, T], bool] = lambda _plan, _item: True,
    select: Callable[[int, Sequence[T]], list[T]] | None = None,
    fill: bool = False,
    page_size: int = MAX_PAGE_COUNT,
    on_page: Callable[[Sequence[T]], None] | None = None,
) -> Walk[T]:
    """Walk ``plans`` SCAN-like sequences from ``start`` until ``limit`` items are found
    or ``budget`` (the sum of COUNT hints sent) is spent.

    ``fetch(plan, cursor, count)`` returns the next cursor (0 at the end) and a page.
    With ``fill`` (every item is wanted, as in HSCAN/SSCAN of one key), COUNT asks for
    no more than the room left, so the walk reads about what it returns; otherwise
    (SCAN with a pattern) pages are as large as the budget allows, up to ``page_size``
    (a caller that knows the table is small asks for less, so the budget it spends is
    close to what Redis examines). Either way no page asks for more than
    ``MAX_PAGE_COUNT``: one HSCAN COUNT 10000 of a million-field hash held Redis for
    12.6 ms, and a cursor taken inside a larger page would not decode.
    ``select(plan, page)``, when given, filters a whole page at once instead of
    ``accept`` per item (a walk over a million keys pays one call per page, not per
    key). ``on_page`` sees each page's new items as they are taken, before the next
    page is fetched (work on them can overlap a page the caller has already asked for).
    """
    if not start.cursor.isdigit():
        # A stream entry ID ("1700000000000-0"): the key changed type since that answer.
        raise InvalidInput("the cursor does not fit this call: start again without it")
    items: list[T] = []
    scanned = 0
    position = start
    while position.plan < plans:
        if len(items) >= limit or scanned >= budget:
            return Walk(items, position, scanned)
        most = min(limit - len(items) if fill else page_size, MAX_PAGE_COUNT)
        count = position.count if position.skip else min(most, budget - scanned)
        next_cursor, page = await fetch(position.plan, int(position.cursor), count)
        scanned += count
        matched = (
            select(position.plan, page)
            if select is not None
            else [item for item in page if accept(position.plan, item)]
        )
        skip = position.skip
        if skip and _fingerprint(matched[:skip], identity) == position.fingerprint:
            fresh = matched[skip:]
        else:
            skip, fresh = 0, matched
        room = limit - len(items)
        if len(fresh) > room:
            fresh = fresh[:room]
            items += fresh
            if on_page is not None:
                on_page(fresh)
            taken = skip + room
            return Walk(
                items,
                Position(
                    position.plan,
                    position.cursor,
                    count,
                    taken,
                    _fingerprint(matched[:taken], identity),
                ),
                scanned,
            )
        items += fresh
        if on_page is not None:
            on_page(fresh)
        position = (
            Position(position.plan, str(next_cursor))
            if next_cursor != 0
            else Position(position.plan + 1)
        )
    return Walk(items, None, scanned)


def _fingerprint(items: Sequence[T], identity: Callable[[T], bytes]) -> str:
    digest = hashlib.blake2b(digest_size=6)
    for item in items:
        digest.update(identity(item))
        digest.update(b"\0")
    return digest.hexdigest()
