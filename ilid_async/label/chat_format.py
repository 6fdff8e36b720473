"""Chat formats: how a system text, earlier turns and the user message become the text a model
continues. Depends on nothing of ilid-async, so the config loader can check a prompt file's
template without loading a model.

Two kinds of template:
- a Jinja chat template, as model files and tokenizer configs carry them: `messages` (dicts
  with `role` system/user/assistant and `content`), `add_generation_prompt`, `bos_token`,
  `eos_token`. Rendered in Jinja's sandbox: a model file is input, not code.
- a one-turn text with `{system}` and `{user}` (the older prompt-file form): it cannot hold
  earlier turns, so a prompt with examples needs a Jinja template.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # jinja2 is imported only for Jinja templates
    import jinja2

__all__ = ["ChatFormat", "GEMMA_TURNS"]

# Gemma's turn format as a Jinja chat template, written for this project: Gemma has no system
# role, so the system text opens the first user turn. The bundled demo model's file has no
# template of its own.
GEMMA_TURNS = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'system' -%}{%- set ns.system = m.content ~ '\\n\\n' -%}"
    "{%- else -%}"
    "{{- '<start_of_turn>' ~ ('model' if m.role == 'assistant' else 'user') ~ '\\n' ~ ns.system"
    " ~ m.content ~ '<end_of_turn>\\n' -}}"
    "{%- set ns.system = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)


def _is_jinja(template: str) -> bool:
    return "{%" in template or "{{" in template


def _raise(message: str):
    raise ValueError(message)


class ChatFormat:
    """One chat template, compiled once. ValueError when the template does not compile."""

    def __init__(self, template: str):
        self.source = template
        self.jinja = _is_jinja(template)
        self._compiled: jinja2.Template | None = None  # set for a Jinja template
        if self.jinja:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            self._error = jinja2.TemplateError  # what render() turns into ValueError

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
            # What model templates call: HF's raise_exception and strftime_now.
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            try:
                self._compiled = env.from_string(template)
            except jinja2.TemplateError as e:
                raise ValueError(f"not a valid Jinja chat template ({e})") from None
        elif "{system}" not in template or "{user}" not in template:
            raise ValueError("must be a Jinja chat template or contain {system} and {user}")

    def render(self, system: str, turns: Sequence[tuple[str, str]], user: str) -> str:
        """The text for the model to continue with the assistant's answer: the system text, the
        earlier (user, assistant) turns, then the user message. ValueError when the template
        fails on these messages."""
        if not self.jinja:
            if turns:
                raise ValueError("a template with {system} and {user} holds one turn and cannot "
                                 "show examples: write it as a Jinja chat template")
            # str.replace, not str.format: page text may hold braces.
            return self.source.replace("{system}", system).replace("{user}", user)
        messages = [{"role": "system", "content": system}]
        for question, answer in turns:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": user})
        assert self._compiled is not None  # compiled in __init__ for a Jinja template
        try:
            # The tokenizer adds the model's BOS token itself.
            return self._compiled.render(messages=messages, add_generation_prompt=True,
                                         bos_token="", eos_token="")
        except self._error as e:
            raise ValueError(f"the chat template fails ({e})") from None
