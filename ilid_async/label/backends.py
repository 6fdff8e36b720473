"""The labelling backend that ``llm.backend`` names.

Both are imported only when chosen: the server client never loads llama_cpp, and the engine
never needs the server client.
"""

from __future__ import annotations

from ilid_async.config import LlmSettings, PromptConfig

__all__ = ["make_labeller"]


def make_labeller(llm: LlmSettings, prompt: PromptConfig):
    """The in-process llama.cpp engine, or the client of OpenAI-compatible servers. Either has
    start(), label(label, data) -> LabelResult, close(drain), capacity and stats."""
    if llm.backend == "openai":
        from ilid_async.label.openai_backend import OpenAIBackend

        return OpenAIBackend(llm, prompt)
    from ilid_async.label.engine import LabelEngine

    return LabelEngine(llm, prompt)
