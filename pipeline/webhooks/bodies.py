"""Webhook body templates (Tyk's ``template_path``), rendered with Jinja2.

Errors in a template are a person's config error: they surface once, at start-up, as a
ConfigError (exit status 2), never per event.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from pipeline.errors import ConfigError, PermanentDeliveryError


def _environment() -> jinja2.Environment:
    # Bodies are JSON, not HTML: no autoescape; ``tojson`` quotes values safely.
    return jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - JSON bodies, not HTML
        keep_trailing_newline=True,
    )


class BodyTemplate:
    """A compiled body template; the event's fields are its variables, and ``payload`` is the
    whole event (``{{ payload | tojson }}``)."""

    def __init__(self, source: str, name: str) -> None:
        try:
            self._template = _environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ConfigError(f"template {name}, line {exc.lineno}: {exc.message}") from exc
        self.name = name

    @classmethod
    def load(cls, path: str | Path) -> BodyTemplate:
        try:
            source = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read template {path}: {exc}") from exc
        return cls(source, str(path))

    def render(self, event: Mapping[str, Any]) -> bytes:
        """The body for one event; a variable the event lacks is a permanent delivery error."""
        try:
            return self._template.render({**event, "payload": dict(event)}).encode()
        except jinja2.TemplateError as exc:
            raise PermanentDeliveryError(f"template {self.name}: {exc}") from exc
