"""Tyk's webhook cooldown (``event_timeout``): an identical request to the same target is not
sent again within the cooldown (pure; ``now`` is passed in)."""

from __future__ import annotations

import hashlib

#: Entries that have cooled down are dropped once the map holds more than this.
PRUNE_ABOVE = 10_000


class Cooldown:
    """Remembers, per worker, when each (method, url, body) may be sent again."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[bytes, float] = {}
        self._prune_above = PRUNE_ABOVE

    def admit(self, method: str, url: str, body: bytes, now: float) -> bool:
        """True, and start the cooldown, unless an identical request is still cooling down."""
        if self.seconds <= 0:
            return True
        if len(self._until) > self._prune_above:
            # Bounded memory: forget what has cooled down. Not again before the map doubles:
            # with more entries still cooling than the bound, pruning at every call walked all
            # of them for every webhook.
            self._until = {k: t for k, t in self._until.items() if t > now}
            self._prune_above = max(PRUNE_ABOVE, 2 * len(self._until))
        digest = hashlib.sha256(f"{method} {url} ".encode() + body).digest()
        if self._until.get(digest, 0.0) > now:
            return False
        self._until[digest] = now + self.seconds
        return True
