"""One small hierarchy of errors whose messages are safe to show a model.

Every message here is written by this package: it never carries a Redis URL, a
password, a client address or a stack trace. The original exception, when there
is one, is kept as ``__cause__`` for the server's own log on stderr.
"""

from __future__ import annotations


class MitaRedisMcpError(Exception):
    """Base class. ``str(error)`` is safe to return to the model."""


class ConfigError(MitaRedisMcpError):
    """The configuration is invalid. Carries one line per bad value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class InvalidInput(MitaRedisMcpError):
    """A tool argument is malformed (not a scope question: a shape question)."""


class OutOfScope(MitaRedisMcpError):
    """A key or pattern lies outside the configured prefixes."""


class WritesDisabled(MitaRedisMcpError):
    """A write tool was called while the server is read-only."""

    def __init__(self) -> None:
        super().__init__(
            "writes are disabled: this server is read-only. To allow writes, restart it "
            "with --allow-writes (or MITA_REDIS_MCP_ALLOW_WRITES=1)."
        )


class BackendError(MitaRedisMcpError):
    """Redis could not answer. Subclasses say why."""


class RedisUnavailable(BackendError):
    """Redis cannot be reached (refused, DNS, TLS handshake, authentication)."""


class RedisTimeout(BackendError):
    """A Redis command took longer than the configured timeout."""


class RedisRefused(BackendError):
    """Redis answered with an error (WRONGTYPE, NOPERM, OOM, READONLY, unknown command...)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class NotOffered(RedisRefused):
    """A command the configured managed Redis lacks: refused here, never sent (and never
    billed). A ``RedisRefused``, so every tool degrades exactly as on a real refusal."""

    def __init__(self, command: str, provider: str) -> None:
        super().__init__(
            "NOTSENT",
            f"{command} is not offered by {provider} (--managed {provider.lower()}): "
            "not sent, nothing billed",
        )


class ConcurrentWrite(MitaRedisMcpError):
    """Another client wrote a key each time a write tool had journaled it: the tool
    wrote nothing."""


class BudgetExceeded(MitaRedisMcpError):
    """The next command would take this call past its command budget."""

    def __init__(self, budget: int, spent: int) -> None:
        self.budget = budget
        self.spent = spent
        super().__init__(
            f"this call would exceed the command budget of {budget} (spent {spent}): "
            "narrow the call (a smaller count, pattern or window), or raise "
            "--command-budget (MITA_REDIS_MCP_COMMAND_BUDGET)"
        )
