"""Tyk's webhook cooldown (``event_timeout``): an identical request to the same target is not
sent again within the cooldown (pure; ``now`` is passed in)."""

from __future__ import annotations

import hashlib


class Cooldown:
    """Remembers, per worker, when each (method, url, body) may be sent again."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[bytes, float] = {}

    def admit(self, method: str, url: str, body: bytes, now: float) -> bool:
        """True, and start the cooldown, unless an identical request is still cooling down."""
        if self.seconds <= 0:
            return True
        if len(self._until) > 10_000:
            # Bounded memory: forget what has cooled down.
            self._until = {k: t for k, t in self._until.items() if t > now}
        digest = hashlib.sha256(f"{method} {url} ".encode() + body).digest()
        if self._until.get(digest, 0.0) > now:
            return False
        self._until[digest] = now + self.seconds
        return True
