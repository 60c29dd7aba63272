"""The two kinds of config section: our own (strict) and Tyk's (pasted as they are)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Our own sections: frozen, and a misspelt key is an error rather than silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TykSection(BaseModel):
    """Sections copied from tyk.conf or the dashboard config: keys we do not use are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")
