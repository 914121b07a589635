"""A Redis Cluster's primaries, and one SCAN cursor that walks them all.

Pure: ``backend`` asks Redis (CLUSTER SLOTS, SCAN on each primary); this module says
what the answers mean. A cluster's keys live on its primaries, each owning ranges of
the 16384 hash slots. A walk over every key is one SCAN walk per primary, one after
the other, behind one integer cursor that the tools pass around like SCAN's own:

    cursor = node cursor << 64 | layout << 42 | node << 10 | index

``index``: the primary being walked, in slot order; ``node``: a hash of its node id;
``layout``: a hash of every primary's slot ranges; ``node cursor``: that primary's own
SCAN cursor. 0 starts the walk, and 0 comes back only after the last primary.

A failover gives a range of slots a new primary (another node id, holding the same
keys): the walk restarts that primary from 0, so keys may repeat, as SCAN allows, but
none present throughout is missed. Slots moving between primaries (resharding, a
primary added or removed) could carry keys from a primary not yet walked to one already
walked: that walk is refused, and must start again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mita_redis_mcp.errors import InvalidInput

SLOTS = 16384
_INDEX_BITS = 10
_NODE_BITS = 32
_LAYOUT_BITS = 22
_NODE_SHIFT = _INDEX_BITS
_LAYOUT_SHIFT = _INDEX_BITS + _NODE_BITS
_CURSOR_SHIFT = 64
MAX_PRIMARIES = (1 << _INDEX_BITS) - 1
MAX_NODE_CURSOR = 2**64 - 1
MAX_CURSOR = (MAX_NODE_CURSOR << _CURSOR_SHIFT) | ((1 << _CURSOR_SHIFT) - 1)
# Slot ranges named in a node's label; beyond them, a count.
_LABEL_RANGES = 3


@dataclass(frozen=True)
class Shard:
    """One primary and the slot ranges it owns."""

    node_id: str
    host: str
    port: int
    slots: tuple[tuple[int, int], ...]

    @property
    def address(self) -> str:
        """host:port: an address, shown only where addresses may be."""
        return f"{self.host}:{self.port}"

    @property
    def label(self) -> str:
        """The node named without its address: its id's first 8 characters and its
        slots, e.g. '3f2a1b9c slots 0-5460'."""
        ranges = [f"{a}-{b}" if a != b else str(a) for a, b in self.slots]
        shown = ",".join(ranges[:_LABEL_RANGES])
        if len(ranges) > _LABEL_RANGES:
            shown += f" (+{len(ranges) - _LABEL_RANGES} ranges)"
        return f"{self.node_id[:8]} slots {shown}"


@dataclass(frozen=True)
class Topology:
    """The primaries, ordered by the first slot each owns."""

    shards: tuple[Shard, ...]

    @property
    def layout(self) -> int:
        """A hash of who owns which slots, without node ids: a failover keeps it, a
        slot moving to another primary changes it."""
        text = ";".join(",".join(f"{a}-{b}" for a, b in s.slots) for s in self.shards)
        return _hash(text.encode(), _LAYOUT_BITS)


def topology(reply: Sequence[Any], default_host: str) -> Topology:
    """The primaries named in a CLUSTER SLOTS reply (``[start, end, [host, port, id,
    ...], replicas...]`` per range). An empty host means the node that answered."""
    owned: dict[str, tuple[str, int, list[tuple[int, int]]]] = {}
    for entry in reply:
        start, end, primary = int(entry[0]), int(entry[1]), entry[2]
        host = _text(primary[0]) or default_host
        node_id = _text(primary[2]) if len(primary) > 2 else f"{host}:{int(primary[1])}"
        owned.setdefault(node_id, (host, int(primary[1]), []))[2].append((start, end))
    shards = [
        Shard(node_id, host, port, tuple(sorted(ranges)))
        for node_id, (host, port, ranges) in owned.items()
    ]
    shards.sort(key=lambda s: s.slots[0])
    if len(shards) > MAX_PRIMARIES:
        raise InvalidInput(f"the cluster has more than {MAX_PRIMARIES} primaries")
    return Topology(tuple(shards))


@dataclass(frozen=True)
class Place:
    """Where a cluster walk stands: which primary, and its own SCAN cursor."""

    index: int
    node_cursor: int


def resume(cursor: int, view: Topology) -> Place:
    """The place a combined cursor names in ``view``. Raises ``InvalidInput`` for a
    cursor this cluster cannot continue (not one of ours, or the slots moved)."""
    if cursor == 0:
        return Place(0, 0)
    if not 0 < cursor <= MAX_CURSOR:
        raise InvalidInput("the cursor is out of range: pass back next_cursor exactly as returned")
    index = cursor & MAX_PRIMARIES
    node = (cursor >> _NODE_SHIFT) & ((1 << _NODE_BITS) - 1)
    layout = (cursor >> _LAYOUT_SHIFT) & ((1 << _LAYOUT_BITS) - 1)
    node_cursor = cursor >> _CURSOR_SHIFT
    if layout != view.layout:
        raise InvalidInput(
            "the cluster's slots moved between primaries since this walk began (resharding, "
            f"or a primary added or removed; it now has {len(view.shards)} primaries): keys "
            "could be missed, so this cursor is refused. Start again without a cursor"
        )
    if index >= len(view.shards):
        raise InvalidInput("the cursor is out of range: pass back next_cursor exactly as returned")
    if node != _node_hash(view.shards[index]):
        # A failover: another node serves these slots, and the old node's cursor means
        # nothing to it. Walk it from the start.
        return Place(index, 0)
    return Place(index, node_cursor)


def advance(place: Place, node_next: int, view: Topology) -> int:
    """The combined cursor after one SCAN page on ``place``'s primary answered
    ``node_next``: the same primary further on, the next primary from 0, or 0 (done)."""
    index = place.index
    if node_next == 0:
        index += 1
        if index >= len(view.shards):
            return 0
    return (
        (node_next << _CURSOR_SHIFT)
        | (view.layout << _LAYOUT_SHIFT)
        | (_node_hash(view.shards[index]) << _NODE_SHIFT)
        | index
    )


def _node_hash(shard: Shard) -> int:
    return _hash(shard.node_id.encode(), _NODE_BITS)


def _hash(data: bytes, bits: int) -> int:
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << bits) - 1)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
