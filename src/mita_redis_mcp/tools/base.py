"""What every tool shares: the answer's common fields, and how a tool is declared."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field


class Answer(BaseModel):
    """Base of every tool's structured output."""

    commands: int = Field(
        default=0, description="Redis commands this call sent (managed Redis bills each one)"
    )
    demo: bool = Field(
        default=False,
        description="True when the answer comes from the built-in demo keyspace, not a real Redis",
    )


@dataclass(frozen=True)
class ToolSpec:
    """A tool as ``server`` registers it. ``fn``'s first parameter is the ``App``."""

    fn: Callable[..., Awaitable[Answer]]
    title: str
    writes: bool = False

    @property
    def name(self) -> str:
        return self.fn.__name__.rstrip("_")

    @property
    def annotations(self) -> ToolAnnotations:
        if self.writes:
            return ToolAnnotations(
                title=self.title,
                read_only_hint=False,
                destructive_hint=True,
                idempotent_hint=True,
                open_world_hint=False,
            )
        return ToolAnnotations(
            title=self.title, read_only_hint=True, idempotent_hint=True, open_world_hint=False
        )
