"""The five fields the model writes for a record, named once: the prompt, the filters, the
grounding check, the dataset file, the statistics and the report all take them from here."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["LabelField", "GroundedField", "LABEL_FIELDS", "DATASET_ORDER", "NAME_FIELDS", "MATERIAL_FIELDS", "GROUNDED_FIELDS"]

# In the order the model writes them (the prompt's answer object).
LabelField = Literal["label_long", "label_short", "description", "material", "material_finish"]
LABEL_FIELDS: tuple[LabelField, ...] = get_args(LabelField)
# In the order of ILID's dataset file (docs/rules.md §5), and of the statistics.
DATASET_ORDER: tuple[str, ...] = ("label_short", "label_long", "description", "material", "material_finish")
NAME_FIELDS: tuple[str, ...] = ("label_short", "label_long")  # what the part is
MATERIAL_FIELDS: tuple[str, ...] = ("material", "material_finish")  # what it is made of
# Checked against the page's words (label.quality): all but the free-text description.
GroundedField = Literal["label_long", "label_short", "material", "material_finish"]
GROUNDED_FIELDS: tuple[GroundedField, ...] = get_args(GroundedField)
