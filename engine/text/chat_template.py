"""A model's chat template rendered as transformers renders it, without importing transformers.

The same sandboxed Jinja environment and helpers as transformers' chat_template_utils
(5.x): trim_blocks and lstrip_blocks, loop controls, a tojson that does not escape HTML,
raise_exception, strftime_now, and dict and namespace that templates cannot break out
through. Templates from the hub are untrusted code, hence the sandbox. Not here: the
`{% generation %}` tag (only for training masks; such a template fails to compile, and is
then rendered by transformers). A kept tokenizer is only read this way after it rendered a
chat exactly as transformers did (engine.loading.plain_entry).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment


def compile_chat_template(source: str) -> jinja2.Template:
    """The template compiled in transformers' sandbox (jinja2.TemplateError if it is not
    valid there)."""
    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    environment.globals["dict"] = _TemplateDict()
    environment.globals["namespace"] = _TemplateNamespace
    return environment.from_string(source)


def render_chat_template(
    template: jinja2.Template,
    messages: list[dict[str, str]],
    special_tokens: dict[str, str],
    add_generation_prompt: bool,
    **variables: Any,
) -> str:
    """The prompt text, with the variables transformers gives a template (its special tokens
    by name, no tools, no documents); messages' keys holding None are left out, as there."""
    conversation = [{key: value for key, value in message.items() if value is not None}
                    for message in messages]  # fmt: skip
    return template.render(
        **{**special_tokens, **variables},
        messages=conversation,
        tools=None,
        documents=None,
        add_generation_prompt=add_generation_prompt,
    )


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Jinja's own tojson escapes HTML characters, which would change the prompt.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(format_: str) -> str:
    return datetime.now().strftime(format_)  # local time, as transformers


class _TemplateDict:
    """dict() for templates, without the class itself to climb out through."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """namespace() for templates, refusing underscore names (a way into CPython's
    internals)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # Jinja's own signature trick
        self, rest = args[0], args[1:]
        attributes = dict(*rest, **kwargs)
        for name in attributes:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attributes)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore names on a namespace ({name!r})"
            )
