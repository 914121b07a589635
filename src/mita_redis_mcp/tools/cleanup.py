"""Write tools that clean up after the others: undo from the journal, and a pattern
delete that must be confirmed with the token of its own dry run."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, Field

from mita_redis_mcp import cursor as cursors
from mita_redis_mcp.app import App
from mita_redis_mcp.errors import InvalidInput, OutOfScope
from mita_redis_mcp.journal import ABSENT, Change, JournalRefused, Prior, fingerprint
from mita_redis_mcp.scope import pattern_from_text
from mita_redis_mcp.tools.base import Answer, ToolSpec
from mita_redis_mcp.values import KeyRef, key_ref

MAX_UNDO = 100
# delete_pattern: most keys one call deletes, keys per UNLINK (and per DUMP pipeline),
# most keys one call's walk examines, keys shown in a sample, a token's lifetime.
MAX_PATTERN_DELETE = 10_000
BATCH = 500
DELETE_SCAN_BUDGET = 1_000_000
SAMPLE = 20
TOKEN_SECONDS = 600

# Tokens are signed with a secret of this process: one from another server, or from
# before a restart, is refused.
_SECRET = secrets.token_bytes(32)
_TOKEN = re.compile(r"^(?P<expiry>\d{1,12})\.(?P<count>\d{1,6})\.(?P<mac>[0-9a-f]{32})$")


# -- answers ------------------------------------------------------------------------


class UndoneChange(BaseModel):
    change: str = Field(description="The change's id in the journal")
    tool: str = Field(description="The write tool that made it")
    time: str = Field(description="When it was made (UTC, ISO 8601)")
    keys: int = Field(description="Keys it touched")
    restored: int = Field(description="Keys put back with RESTORE (value, type and TTL)")
    removed: int = Field(description="Keys deleted because they did not exist before")
    unchanged: int = Field(description="Keys already in their prior state (nothing to do)")


class RefusedChange(KeyRef):
    change: str
    tool: str
    reason: str


class UndoResult(Answer):
    undone: list[UndoneChange] = Field(description="Changes restored, newest first")
    refused: RefusedChange | None = Field(
        description="The change undo stopped at, and why (nothing of it was restored)"
    )
    remaining: int = Field(description="Changes still in the journal that undo could restore")
    journal: str = Field(description="Where the journal is")


class DeletePatternResult(Answer):
    dry_run: bool = Field(description="True when nothing was deleted (no token, or refused)")
    matched: int = Field(description="Keys in scope matching the pattern that this call found")
    sample: list[KeyRef] = Field(description=f"Up to {SAMPLE} of them")
    confirm_token: str | None = Field(
        description="Pass it back, with the same pattern and max_keys, to delete exactly "
        f"these keys; valid {TOKEN_SECONDS} s"
    )
    deleted: int = Field(description="Keys removed with UNLINK (journaled for undo first)")
    complete: bool = Field(description="True when the walk reached the end: no key was left out")
    scanned: int = Field(description="Keys Redis was asked to examine (sum of SCAN COUNT hints)")
    note: str


# -- tools --------------------------------------------------------------------------


async def undo(
    app: App,
    count: Annotated[
        int,
        Field(ge=1, le=MAX_UNDO, description=f"How many of the last changes (at most {MAX_UNDO})"),
    ] = 1,
) -> UndoResult:
    """Undo the last `count` changes made by set, delete and delete_pattern, newest
    first, from the local undo journal: each key gets back its exact prior value,
    type and TTL (RESTORE ... REPLACE with the recorded TTL), and a key that did not
    exist before is deleted. Only available when writes are enabled.

    Refuses a change (restoring nothing of it, and stopping there) when one of its
    keys has changed since that write (its value or type is neither what the write
    left nor the prior state): undo never overwrites someone else's later write. The
    keys are checked again and restored in one transaction (WATCH, MULTI, EXEC; 500
    keys each), so a write landing in between is refused too, not overwritten. A
    change naming a key outside the allowed prefixes (a journal kept under another
    configuration) is an error, and nothing is restored.
    Cost: 3 Redis commands per key to check, twice; 1 per key to restore; 3 per 500
    keys for the transaction.
    """
    app.require_writes()
    pending = [c for c in reversed(app.journal.changes()) if not c.undone and not c.void]
    undone: list[UndoneChange] = []
    refused: RefusedChange | None = None
    for change in pending[:count]:
        # A journal kept under another configuration may name keys this scope forbids.
        if not all(app.scope.contains(prior.key) for prior in change.priors):
            raise OutOfScope(
                f"change {change.id} in the undo journal ({change.tool}) names a key outside "
                f"the allowed prefixes ({app.scope.describe()}): it was made under another "
                "configuration. Nothing was restored; undo it with that configuration, or "
                "move the journal aside (--journal)"
            )
    for change in pending[:count]:
        plan, problem = await _restore_plan(app, change, _earliest_priors(change))
        if problem is None:
            plan, problem = await _restore(app, change, plan)
        if problem is not None:
            refused = RefusedChange(
                **key_ref(problem[0]), change=change.id, tool=change.tool, reason=problem[1]
            )
            break
        app.journal.mark_undone(change)
        removed = sum(dump is None for _, _, dump in plan)
        undone.append(
            UndoneChange(
                change=change.id,
                tool=change.tool,
                time=datetime.fromtimestamp(change.time, UTC).isoformat(timespec="seconds"),
                keys=len(change.priors),
                restored=len(plan) - removed,
                removed=removed,
                unchanged=len(change.priors) - len(plan),
            )
        )
    return UndoResult(
        undone=undone,
        refused=refused,
        remaining=len(pending) - len(undone),
        journal=app.journal.describe(),
    )


async def delete_pattern(
    app: App,
    pattern: Annotated[
        str,
        Field(
            min_length=1,
            max_length=512,
            description="Redis glob over full key names, e.g. 'app:test:*'. It cannot reach "
            "outside the allowed prefixes.",
        ),
    ],
    confirm_token: Annotated[
        str | None,
        Field(
            max_length=100,
            description="The confirm_token of a dry run of the same pattern and max_keys. "
            "Without it, nothing is deleted: the call is a dry run.",
        ),
    ] = None,
    max_keys: Annotated[
        int,
        Field(
            ge=1,
            le=MAX_PATTERN_DELETE,
            description=f"Most keys this call deletes (at most {MAX_PATTERN_DELETE})",
        ),
    ] = MAX_PATTERN_DELETE,
) -> DeletePatternResult:
    """Delete the keys in scope that match a glob pattern, in two steps. Only
    available when writes are enabled.

    1. Without confirm_token: a dry run. Nothing is deleted; the answer gives how many
       keys match (up to max_keys), a sample, and a confirm_token. Show the user the
       count and sample and ask before going on.
    2. With that confirm_token (same pattern and max_keys, within 10 minutes): the keys
       are found again with SCAN; if they are not exactly the ones the dry run saw,
       nothing is deleted and a new dry run is returned. Otherwise each key's prior
       state is journaled (so `undo` can restore them all) and the keys are removed
       with UNLINK, 500 at a time.

    One call deletes at most 10000 keys and examines at most 1000000 with SCAN (1000
    per command, so Redis is never blocked); when `complete` is false, more may match:
    call again without a token for a dry run of what remains.
    Cost: 1 SCAN per 1000 keys examined; a delete adds 3 commands per key (journal)
    and 1 UNLINK per 500 keys.
    """
    app.require_writes()
    raw_pattern = pattern_from_text(pattern)
    found, complete, scanned = await _walk(app, raw_pattern, max_keys)
    digest = _digest(found)
    sample = [KeyRef(**key_ref(k)) for k in found[:SAMPLE]]

    def dry_run(note: str) -> DeletePatternResult:
        token = _sign(raw_pattern, max_keys, len(found), digest) if found else None
        return DeletePatternResult(
            dry_run=True,
            matched=len(found),
            sample=sample,
            confirm_token=token,
            deleted=0,
            complete=complete,
            scanned=scanned,
            note=note,
        )

    if confirm_token is None:
        more = "" if complete else " More keys may match beyond these: delete these first."
        return dry_run(
            (
                f"Dry run: nothing deleted. {len(found)} key(s) match.{more} To delete "
                "them, call again with the same pattern and max_keys and this confirm_token."
            )
            if found
            else "No key in scope matches: nothing to delete."
        )
    expiry, seen = _token_parts(confirm_token)
    # The keys found now, signed as the dry run signed what it saw: equal tokens mean
    # the same pattern, max_keys and keys, from this server process.
    if not hmac.compare_digest(
        confirm_token, _sign(raw_pattern, max_keys, len(found), digest, expiry)
    ):
        return dry_run(
            f"Nothing deleted: the keys found now ({len(found)}) are not those the token's "
            f"dry run saw ({seen}): they changed since, or the token belongs to another "
            "pattern, max_keys or server process. This answer is a new dry run: show it to "
            "the user and confirm with its token."
        )
    deleted, stopped = await _delete(app, found)
    if stopped is not None:
        note = f"Deleted {deleted} of {len(found)} key(s), then stopped: {stopped}"
    elif complete:
        note = f"Deleted {deleted} key(s); every matching key in scope was found. Undo: `undo`."
    else:
        note = (
            f"Deleted {deleted} key(s), the most one call deletes. More may match: call "
            "again without a token for a dry run of what remains. Undo: `undo`."
        )
    return DeletePatternResult(
        dry_run=False,
        matched=len(found),
        sample=sample,
        confirm_token=None,
        deleted=deleted,
        complete=complete and stopped is None,
        scanned=scanned,
        note=note,
    )


TOOLS = (
    ToolSpec(undo, "Undo the last writes", writes=True),
    ToolSpec(delete_pattern, "Delete keys by pattern", writes=True),
)


# -- undo ---------------------------------------------------------------------------


Restore = tuple[bytes, int, bytes | None]
Problem = tuple[bytes, str]


def _earliest_priors(change: Change) -> list[Prior]:
    """Each key's state before ``change`` (its first prior, when a call journaled a
    key twice)."""
    return list({prior.key: prior for prior in reversed(change.priors)}.values())


async def _restore_plan(
    app: App, change: Change, priors: list[Prior], restored: int = 0
) -> tuple[list[Restore], Problem | None]:
    """What to restore of ``priors``, or the first key that changed since and why."""
    plan: list[Restore] = []
    for start in range(0, len(priors), BATCH):
        batch = priors[start : start + BATCH]
        states = await app.backend.dump_states([p.key for p in batch])
        for prior, (_, _, dump) in zip(batch, states, strict=True):
            now = fingerprint(dump)
            if now == prior.fingerprint:
                continue
            if now != change.expected_after(prior.key):
                return [], (prior.key, _changed_since(change, prior.key, now, restored))
            plan.append((prior.key, prior.pttl, prior.dump))
    return plan, None


async def _restore(
    app: App, change: Change, plan: list[Restore]
) -> tuple[list[Restore], Problem | None]:
    """Put ``plan`` back, ``BATCH`` keys per transaction: each batch is checked again
    under WATCH and restored by the same MULTI/EXEC, so a write by another client after
    the check makes it refuse instead of overwriting. Returns what was restored."""
    priors = {prior.key: prior for prior in _earliest_priors(change)}
    done: list[Restore] = []
    # A transaction holds within one hash slot of a Redis Cluster (one group elsewhere).
    batches = [
        group[start : start + BATCH]
        for group in app.backend.slot_groups([key for key, _, _ in plan])
        for start in range(0, len(group), BATCH)
    ]
    for keys in batches:
        batch = [priors[key] for key in keys]
        outcome: list[tuple[list[Restore], Problem | None]] = []
        check = functools.partial(_recheck, app, change, batch, len(done), outcome)
        if not await app.backend.restore_unless_changed([p.key for p in batch], check):
            # WATCH saw a write after the check: name the key, if it still differs.
            _, problem = await _restore_plan(app, change, batch, len(done))
            key = problem[0] if problem is not None else batch[0].key
            return done, (key, _raced(change, len(done), found_key=problem is not None))
        now, problem = outcome[0]
        if problem is not None:
            return done, problem
        done += now
    return done, None


async def _recheck(
    app: App,
    change: Change,
    priors: list[Prior],
    restored: int,
    outcome: list[tuple[list[Restore], Problem | None]],
) -> list[Restore]:
    """The check run under WATCH: what the transaction restores (nothing when a key
    changed since); the plan and problem go into ``outcome``."""
    plan, problem = await _restore_plan(app, change, priors, restored)
    outcome.append((plan, problem))
    return plan


def _nothing_restored(restored: int) -> str:
    if restored:
        return f"the rest of this change was not restored ({restored} of its keys were)"
    return "nothing of this change was restored"


def _changed_since(change: Change, key: bytes, now: str, restored: int = 0) -> str:
    if change.expected_after(key) is None:
        return (
            f"the {change.tool} call did not finish, and the key is no longer in its "
            "prior state: what it holds may be someone else's write, so "
            f"{_nothing_restored(restored)}"
        )
    state = "deleted" if now == ABSENT else "written again"
    return (
        f"the key was {state} after this {change.tool}: restoring it would overwrite "
        f"that later change, so {_nothing_restored(restored)} (read the key, and fix it "
        "by hand if needed)"
    )


def _raced(change: Change, restored: int, *, found_key: bool) -> str:
    who = "the key" if found_key else "a key of this change (or the connection dropped)"
    return (
        f"{who} changed since undo checked it: another client wrote it between the check "
        f"and the RESTORE of this {change.tool}, which WATCH caught. Restoring would "
        f"overwrite that write, so {_nothing_restored(restored)}; read the key, then run "
        "undo again if it still applies"
    )


# -- delete_pattern -----------------------------------------------------------------


async def _walk(app: App, raw_pattern: bytes, limit: int) -> tuple[list[bytes], bool, int]:
    """The in-scope keys matching the pattern, in SCAN order, unique, at most ``limit``."""
    plans = app.scope.plan_scan(raw_pattern)

    async def page(plan: int, scan_cursor: int, count: int) -> tuple[int, list[bytes]]:
        return await app.backend.scan(scan_cursor, plans[plan].match, count)

    page_size = cursors.table_page(await app.backend.dbsize()) if len(plans) > 1 else None
    walk = await cursors.walk(
        page,
        start=cursors.Position(),
        plans=len(plans),
        limit=limit,
        budget=max(DELETE_SCAN_BUDGET, app.limits.scan_budget),
        page_size=page_size or cursors.MAX_PAGE_COUNT,
        identity=lambda k: k,
        # Each key is matched here again, not trusted from SCAN MATCH: these get deleted.
        accept=lambda plan, k: (
            plans[plan].accepts(k) and plans[plan].pattern.matches(k) and app.scope.contains(k)
        ),
    )
    return list(dict.fromkeys(walk.items)), walk.complete, walk.scanned


async def _delete(app: App, keys: list[bytes]) -> tuple[int, str | None]:
    """Journal then UNLINK ``keys`` in batches; stop early when the journal cannot hold
    the next batch (returning why)."""
    deleted = 0
    change: Change | None = None
    try:
        for start in range(0, len(keys), BATCH):
            batch = app.scope.check_keys(keys[start : start + BATCH])
            try:
                change = await app.journal.record(app.backend, "delete_pattern", batch, change)
            except JournalRefused as exc:
                return deleted, str(exc)
            deleted += await app.backend.unlink(batch)
    finally:
        if change is not None:
            await app.journal.commit(change)
    return deleted, None


def _digest(keys: list[bytes]) -> str:
    digest = hashlib.sha256()
    for key in sorted(keys):
        digest.update(len(key).to_bytes(4, "big"))
        digest.update(key)
    return digest.hexdigest()


def _sign(pattern: bytes, max_keys: int, count: int, digest: str, expiry: int | None = None) -> str:
    """``expiry.count.mac``: the mac binds the pattern, max_keys, the count and the
    keys' digest (none of which the token shows) to this process's secret."""
    expiry = expiry if expiry is not None else int(time.time()) + TOKEN_SECONDS
    message = b"\0".join(
        [
            pattern,
            str(max_keys).encode(),
            str(expiry).encode(),
            str(count).encode(),
            digest.encode(),
        ]
    )
    mac = hmac.new(_SECRET, message, hashlib.sha256).hexdigest()[:32]
    return f"{expiry}.{count}.{mac}"


def _token_parts(token: str) -> tuple[int, int]:
    """A token's expiry and the count its dry run saw; refuses a malformed or expired
    token (its mac is checked by the caller)."""
    match = _TOKEN.match(token)
    if match is None:
        raise InvalidInput("confirm_token is malformed: pass the dry run's token exactly")
    expiry, count = int(match["expiry"]), int(match["count"])
    if expiry < time.time():
        raise InvalidInput(
            "confirm_token has expired: run the dry run again (no token) and confirm anew"
        )
    return expiry, count
