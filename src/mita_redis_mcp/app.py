"""What every tool needs: the settings, the scope and the backend, built once."""

from __future__ import annotations

from dataclasses import dataclass, field

from mita_redis_mcp.backend import Backend
from mita_redis_mcp.config import Limits, Settings
from mita_redis_mcp.errors import WritesDisabled
from mita_redis_mcp.journal import Journal
from mita_redis_mcp.schema import Profile
from mita_redis_mcp.scope import Scope


@dataclass(frozen=True)
class App:
    settings: Settings
    scope: Scope
    backend: Backend
    profiles: tuple[Profile, ...] = ()
    # The undo journal of the write tools (in memory unless built from settings).
    journal: Journal = field(default_factory=lambda: Journal(None, 64 * 1024 * 1024))

    @classmethod
    def from_settings(cls, settings: Settings, backend: Backend | None = None) -> App:
        profiles = settings.load_profiles()
        scope = Scope(settings.scope_prefixes(profiles), allow_all_keys=settings.allow_all_keys)
        return cls(
            settings,
            scope,
            backend or Backend.from_settings(settings),
            tuple(profiles),
            Journal.from_settings(settings),
        )

    @property
    def limits(self) -> Limits:
        return self.settings.limits

    def require_writes(self) -> None:
        if not self.settings.allow_writes:
            raise WritesDisabled
