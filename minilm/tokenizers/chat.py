"""Rendering a model's chat template: a conversation in, the prompt text out.

Chat models are trained on conversations laid out in one exact text format (roles,
separators, special tokens), and each model ships that format as a Jinja template
(GGUF `tokenizer.chat_template`, or `chat_template` in Hugging Face's
`tokenizer_config.json`). Rendering it the way Hugging Face does gives the same text,
so the same ids, that the model saw in training:

  * a sandboxed Jinja environment (templates come from downloaded files, so they must
    not reach Python internals) that cannot modify its inputs;
  * `trim_blocks` and `lstrip_blocks`, so `{% ... %}` lines leave no stray whitespace;
  * the `loopcontrols` extension (`{% break %}`, `{% continue %}`), a `{% generation %}`
    block that renders its body, `raise_exception(message)`, `strftime_now(format)`,
    and a `tojson` filter that keeps non-ASCII text as it is;
  * the variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token` (and any
    extra keyword arguments, e.g. `tools`).

Jinja2 is an optional dependency (`pip install minilm[chat]`), imported on first use.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any


class ChatTemplateError(ValueError):
    """The template called `raise_exception`, or failed to parse or render."""


def _jinja():
    try:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox
    except ImportError:
        raise ImportError(
            "chat templates need Jinja2: pip install jinja2 (or pip install minilm[chat])"
        ) from None
    return jinja2


@lru_cache(maxsize=16)
def _compile(template: str):
    jinja2 = _jinja()

    class GenerationBlock(jinja2.ext.Extension):
        # Hugging Face templates may mark the assistant's text with
        # {% generation %} ... {% endgeneration %}; the text itself renders unchanged.
        tags = frozenset({"generation"})

        def parse(self, parser):
            line = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(line)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise ChatTemplateError(f"the chat template refused the conversation: {message}")

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Jinja's own tojson escapes HTML characters (<, >, &, '), which would change the prompt.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, jinja2.ext.loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda format: datetime.now().strftime(format)
    try:
        return environment.from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"the chat template does not parse: {exc} (line {exc.lineno})") from None


def render_chat_template(
    template: str,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool = False,
    **variables: Any,
) -> str:
    """The prompt text for `messages` ({"role": ..., "content": ...} dicts).

    `add_generation_prompt=True` ends the text with the opening of an assistant turn,
    so that the model's continuation is its reply. `variables` (bos_token, eos_token,
    tools, ...) are passed to the template.
    """
    if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
        raise TypeError("messages must be a list of {'role': ..., 'content': ...} dicts")
    compiled = _compile(template)
    jinja2 = _jinja()
    try:
        return compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt, **variables)
    except jinja2.TemplateError as exc:  # raise_exception's ChatTemplateError passes through as it is
        raise ChatTemplateError(f"the chat template failed: {exc}") from None
