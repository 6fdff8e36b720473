"""The label stage's work: a pre-filtered record is labelled by the backend, its answer goes
through the no-value rule and the post-filter (rules §4), and the record is committed with its
labels and image folder, or rejected or failed with the reason.

    record (label, data) -> backend answer -> no-value rule -> post-filter -> labels + folder
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict
from typing import TYPE_CHECKING

from ilid_async import reasons
from ilid_async.config import FilterSettings
from ilid_async.filters import Rejected, apply_no_value_rule, postfilter
from ilid_async.label.quality import page_words, ungrounded_fields
from ilid_async.run.store import LabelTask, Store

if TYPE_CHECKING:
    from ilid_async.label.engine import LabelEngine
    from ilid_async.label.openai_backend import OpenAIBackend

__all__ = ["ungrounded_rejection", "LabelStage"]


def ungrounded_rejection(answer: dict[str, str | None], label: str, data: list[str],
                         fields: Collection[str]) -> str | None:
    """The post-filter reason for an answer with a label in ``fields`` (filters.reject_ungrounded)
    that is not grounded in the page text (the first in GROUNDED_FIELDS order), else None."""
    if not fields:
        return None
    bad = (name for name in ungrounded_fields(answer, page_words(label, data)) if name in fields)
    return next((reasons.ungrounded(name) for name in bad), None)


class LabelStage:
    """Labels leased records with ``backend`` (the in-process engine or a server client)."""

    def __init__(self, store: Store, backend: LabelEngine | OpenAIBackend, filters: FilterSettings):
        self.store = store
        self.backend = backend
        self.filters = filters

    async def label_record(self, task: LabelTask) -> None:
        result = await self.backend.label(task.label, task.data)
        if result.truncated:
            self.store.bump("label_input_truncated")
        if result.fields is None:
            self.store.commit_labels(task.id, answer=None, labels=None, folder=None, fail=result.reason)
            return
        answer = apply_no_value_rule(result.fields)
        labels = postfilter(answer, self.filters.min_field_length)
        if isinstance(labels, Rejected):
            self.store.commit_labels(task.id, answer=answer, labels=None, folder=None,
                                     reject=("postfilter", labels.reason))
            return
        reason = ungrounded_rejection(answer, task.label, task.data, self.filters.reject_ungrounded)
        if reason:
            self.store.commit_labels(task.id, answer=answer, labels=None, folder=None,
                                     reject=("postfilter", reason))
            return
        fields = asdict(labels)
        folder = fields.pop("folder")
        self.store.commit_labels(task.id, answer=answer, labels=fields, folder=folder)
