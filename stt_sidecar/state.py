"""What the sidecar's handlers share, one per app: settings, model, scheduler, open streams.

Feature modules (`batch.py`, `streaming/`) read it through the `STATE` app key and never import
the app factory (`app.py`), which imports them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .config import SidecarSettings
from .errors import ApiError
from .languages import Languages
from .metrics import SidecarMetrics
from .model import ModelSource
from .scheduler import DecodeScheduler


@dataclass
class SidecarState:
    """Everything handlers share; one per app."""

    settings: SidecarSettings
    source: ModelSource
    device: str
    compute_type: str
    metrics: SidecarMetrics = field(default_factory=SidecarMetrics)
    scheduler: DecodeScheduler | None = None
    ready: bool = False
    load_error: str | None = None
    # Admitted streams (`streaming.handler.StreamConnection`s): the one count of open streams.
    streams: set[Any] = field(default_factory=set)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def active_streams(self) -> int:
        return len(self.streams)

    def release_stream(self, conn: Any) -> None:
        """A stream (either protocol) is over: free its slot; the last one gives batch back
        every decode worker."""
        self.streams.discard(conn)
        if not self.streams and self.scheduler is not None:
            self.scheduler.poke()

    def require_scheduler(self) -> DecodeScheduler:
        """The scheduler once the model is loaded and warm; 503 with Retry-After before."""
        if not self.ready or self.scheduler is None:
            raise ApiError(
                503, "The model is still loading; retry shortly.", "model_not_ready", retry_after=2
            )
        return self.scheduler

    @property
    def languages(self) -> Languages:
        """The served model's language rules (English-only or multilingual)."""
        return Languages(english_only=self.scheduler is not None and self.scheduler.english_only)

    def load(self) -> float:
        """0..1: the larger of stream occupancy and the scheduler's recent busy fraction."""
        limit = self.settings.max_streams  # 0 until derived at start (capacity.py)
        occupancy = self.active_streams / limit if limit else 0.0
        busy = self.scheduler.busy.fraction() if self.scheduler else 0.0
        return round(min(1.0, max(occupancy, busy)), 3)


STATE = web.AppKey("state", SidecarState)
