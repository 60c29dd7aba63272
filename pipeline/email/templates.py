"""Email templates: ``templates/email/<name>.txt`` and ``<name>.html``, rendered with Jinja2.

Subjects: each ``<name>.txt`` sets the subject at its top level,

    {% set email_subject = "Quota alert: " ~ org ~ " reached " ~ trigger_limit ~ "%" %}

and renders the text part. The subject is read from the rendered template's module (Jinja2
exports top-level ``set`` variables) and folded onto one line. ``<name>.html`` gets the same
context plus ``email_subject`` (for its ``<title>``). Not ``subject``: TriggerExceeded events
have a field of that name. Autoescape is on for .html only: the subject and the text part carry
event data verbatim, the HTML part escapes it.

A folder of overrides replaces any file by name, ``_layout.html`` included. Every file is read
and compiled at load, so a missing file or a syntax error is a ConfigError naming the file at
start-up; a variable an event lacks is a PermanentDeliveryError for that one email.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes

from pipeline.email.filters import FILTERS
from pipeline.errors import ConfigError, PermanentDeliveryError
from pipeline.resources import templates_dir

TEMPLATE_NAMES = (
    "trigger_exceeded",
    "key_request_submitted",
    "key_request_approved",
    "key_request_rejected",
    "key_request_digest",
    "developer_signed_up",
    "developer_approved",
    "developer_rejected",
    "api_event",
    "key_event",
)

SUBJECT = "email_subject"
SUFFIXES = (".txt", ".html")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    """What one template pair made of one event."""

    subject: str
    text: str
    html: str


def _environment(folders: list[Path]) -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html",), default_for_string=False, default=False
        ),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(FILTERS)
    return environment


def _sets_subject(tree: nodes.Template) -> bool:
    targets = [node.target for node in tree.find_all(nodes.Assign)]
    targets += [node.target for node in tree.find_all(nodes.AssignBlock)]
    return any(isinstance(target, nodes.Name) and target.name == SUBJECT for target in targets)


def _check(environment: jinja2.Environment, name: str, present: set[str]) -> jinja2.Template:
    """Compile one file, and check what it refers to exists and a text part sets its subject."""
    assert environment.loader is not None
    try:
        source, filename, _ = environment.loader.get_source(environment, name)
        tree = environment.parse(source, name, filename)
        template = environment.get_template(name)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename}, line {exc.lineno}"
        raise ConfigError(f"email template {where}: {exc.message}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read email template {name}: {exc}") from exc
    for referenced in meta.find_referenced_templates(tree):
        if referenced is not None and referenced not in present:
            raise ConfigError(f"email template {filename} uses {referenced}, which is missing")
    is_text_part = name.endswith(".txt") and name.removesuffix(".txt") in TEMPLATE_NAMES
    if is_text_part and not _sets_subject(tree):
        raise ConfigError(f"email template {filename} does not set {SUBJECT}")
    return template


class EmailTemplates:
    """The compiled template pairs, one per name in :data:`TEMPLATE_NAMES`."""

    def __init__(self, pairs: Mapping[str, tuple[jinja2.Template, jinja2.Template]]) -> None:
        self._pairs = dict(pairs)

    @classmethod
    def load(cls, overrides_dir: Path | None) -> EmailTemplates:
        """The built-in templates, each file replaced by a same-named one in ``overrides_dir``."""
        folders = [templates_dir() / "email"]
        if overrides_dir is not None:
            if not overrides_dir.is_dir():
                raise ConfigError(f"email templates folder {overrides_dir} is not a folder")
            folders.insert(0, overrides_dir)
        environment = _environment(folders)
        present = set(environment.list_templates(filter_func=lambda n: n.endswith(SUFFIXES)))
        for name in TEMPLATE_NAMES:
            for suffix in SUFFIXES:
                if name + suffix not in present:
                    where = " or ".join(str(folder) for folder in folders)
                    raise ConfigError(f"email template {name}{suffix} is missing from {where}")
        compiled = {name: _check(environment, name, present) for name in sorted(present)}
        return cls(
            {name: (compiled[f"{name}.txt"], compiled[f"{name}.html"]) for name in TEMPLATE_NAMES}
        )

    def render(self, name: str, context: Mapping[str, Any]) -> RenderedEmail:
        """Subject, text and HTML for one event; ValueError for a name not in TEMPLATE_NAMES."""
        if name not in self._pairs:
            raise ValueError(f"no email template named {name!r}")
        text_template, html_template = self._pairs[name]
        try:
            module = text_template.make_module(dict(context))
            text = str(module)
            # Folded: a line break from event data must not end up in the Subject header.
            subject = " ".join(str(getattr(module, SUBJECT, "")).split())
            html = html_template.render({**context, SUBJECT: subject})
        except (jinja2.TemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise PermanentDeliveryError(f"email template {name}: {exc}") from exc
        if not subject:
            raise PermanentDeliveryError(f"email template {name}.txt rendered an empty subject")
        return RenderedEmail(subject=subject, text=text, html=html)
