"""Grounding of labels in the page text: the checks, the store rows, the summary line, the
filters.reject_ungrounded setting and the post-filter rejection it makes."""

from __future__ import annotations

import pytest
from helpers import assert_one_line_exit_2, write_config
from shop import SHOP_TOML

from ilid_async.cli import main
from ilid_async.config import Config, load_config
from ilid_async.output.dataset import write_json_atomic
from ilid_async.fields import GROUNDED_FIELDS
from ilid_async.label.quality import grounding_counts, page_words, ungrounded_fields
from ilid_async.label.result import LabelResult
from ilid_async.label.stage import LabelStage, ungrounded_rejection
from ilid_async.run.summary import format_summary, label_quality_lines
from ilid_async.run.store import Store

SHOP = SHOP_TOML.replace("{base}", "http://127.0.0.1:9")
PAGE = ("Door hinge", ["Zinc plating, hinges for doors"])


def answer(**fields: str | None) -> dict[str, str | None]:
    base = {"label_long": "door hinge", "label_short": "hinge", "description": "Holds a door.",
            "material": "zinc", "material_finish": None}
    return {**base, **fields}


# --- the checks -----------------------------------------------------------------------------


def test_common_suffixes_are_grounded():
    words = page_words(*PAGE)
    # "plated" and "plating" share a stem; "hinges" on the page grounds "hinges" in a label.
    assert ungrounded_fields({"material_finish": "plated", "label_short": "hinges"}, words) == []
    assert ungrounded_fields({"label_short": "boxes"}, page_words("Box", [])) == []


def test_plural_of_a_word_ending_in_e_is_grounded():
    assert ungrounded_fields({"label_short": "hinges"}, page_words("Hinge", [])) == []


def test_function_words_are_ignored_and_other_new_words_are_not():
    words = page_words(*PAGE)
    assert ungrounded_fields({"label_long": "hinge for a door with zinc"}, words) == []
    assert ungrounded_fields({"label_long": "brass door hinge"}, words) == ["label_long"]


def test_empty_values_pass_and_the_description_is_never_checked():
    words = page_words(*PAGE)
    assert ungrounded_fields({"label_short": None, "material": "", "material_finish": None}, words) == []
    assert ungrounded_fields({"description": "A sturdy brass fitting."}, words) == []


def test_hyphen_words_are_checked_word_by_word():
    words = page_words(*PAGE)
    assert ungrounded_fields({"material_finish": "zinc-plated"}, words) == []
    assert ungrounded_fields({"material_finish": "chrome-plated"}, words) == ["material_finish"]
    # Page words are split the same way: "stainless-steel" on the page grounds "steel".
    assert ungrounded_fields({"material": "steel"}, page_words("Hinge", ["stainless-steel"])) == []


def test_ungrounded_fields_come_in_grounded_fields_order():
    fields = answer(material_finish="chrome", label_short="brass hinge", material="brass")
    assert ungrounded_fields(fields, page_words(*PAGE)) == ["label_short", "material", "material_finish"]


# --- the store and the summary --------------------------------------------------------------


def labelled_store(tmp_path, answers: list[dict | None]) -> Store:
    """A store with one record per answer, all with the page text PAGE; None = not labelled
    (left to label)."""
    store = Store(tmp_path / "state.sqlite")
    for i, _answer in enumerate(answers):
        store.add_pages("shop", [(f"http://a.test/p/{i}", None)])
        store.commit_page_record(f"http://a.test/p/{i}", record_id=f"r{i}", shop="shop", source="s",
                                 image_url=f"http://a.test/{i}.jpg", raw_label=PAGE[0], raw_data=PAGE[1],
                                 cleaned=PAGE, reject_reason=None)
    for task in store.lease_for_labelling(len(answers)):
        fields = answers[int(task.id[1:])]
        if fields is not None:
            store.commit_labels(task.id, answer=fields, labels=fields, folder="hinge")
    store.release_leases()  # the unlabelled ones wait for labelling again
    return store


def test_labelled_texts_are_the_prefiltered_text_of_labelled_records(tmp_path):
    store = labelled_store(tmp_path, [answer(), None, answer(material="brass")])
    rows = list(store.queries.labelled_texts())
    store.close()
    assert rows == [(PAGE[0], PAGE[1], answer()), (PAGE[0], PAGE[1], answer(material="brass"))]
    assert grounding_counts(rows) == {"label_long": 0, "label_short": 0, "material": 1, "material_finish": 0}


def test_summary_has_the_grounding_line_after_the_quality_line(tmp_path):
    store = labelled_store(tmp_path, [answer(), answer(material="brass", label_long="brass door hinge"),
                                      answer(material="brass")])
    lines = format_summary(store.queries).splitlines()
    store.close()
    at = next(i for i, line in enumerate(lines) if line.startswith("label quality of 3 answers:"))
    assert lines[at + 1] == ("labels not grounded in the page text: "
                             "label_long 1, label_short 0, material 2, material_finish 0")


def test_no_answers_no_label_quality_lines(tmp_path):
    store = labelled_store(tmp_path, [None])
    assert label_quality_lines(store.queries) == []
    assert "not grounded" not in format_summary(store.queries)
    store.close()


@pytest.mark.slow
def test_stats_of_a_config_prints_the_label_quality_lines_of_its_store(tmp_path, capsys):
    config = write_config(tmp_path, SHOP)
    (tmp_path / "run").mkdir()
    write_json_atomic(tmp_path / "run" / "ilid.json", [])
    assert main(["stats", str(config)]) == 0
    assert "label quality" not in capsys.readouterr().out  # no store yet: no lines, no error

    labelled_store(tmp_path / "run", [answer(material="brass")]).close()
    assert main(["stats", str(config)]) == 0
    out = capsys.readouterr().out
    assert "label quality of 1 answers:" in out
    assert ("labels not grounded in the page text: label_long 0, label_short 0, material 1, "
            "material_finish 0") in out
    # A dataset file alone has no page text: no label-quality lines.
    assert main(["stats", str(tmp_path / "run" / "ilid.json")]) == 0
    assert "label quality" not in capsys.readouterr().out


# --- filters.reject_ungrounded --------------------------------------------------------------


def test_reject_ungrounded_loads_and_defaults_to_none(tmp_path):
    assert load_config(write_config(tmp_path, SHOP)).filters.reject_ungrounded == []
    cfg = load_config(write_config(tmp_path, SHOP, filters='reject_ungrounded = ["material", "label_short"]'))
    assert cfg.filters.reject_ungrounded == ["material", "label_short"]


def test_unknown_reject_ungrounded_field_is_one_line_exit_2(tmp_path):
    config = write_config(tmp_path, SHOP, filters='reject_ungrounded = ["material", "description"]')
    assert_one_line_exit_2(config, "config.toml: key 'filters.reject_ungrounded[1]': one of "
                                   + ", ".join(GROUNDED_FIELDS))


def test_ungrounded_rejection_names_the_first_listed_field_in_grounded_order():
    label, data = PAGE
    bad = answer(label_short="brass hinge", material="brass")
    assert ungrounded_rejection(bad, label, data, []) is None  # default: count only
    assert ungrounded_rejection(bad, label, data, ["material_finish"]) is None  # that field is fine
    assert ungrounded_rejection(bad, label, data, ["material", "label_short"]) == "ungrounded_label_short"
    assert ungrounded_rejection(bad, label, data, ["material"]) == "ungrounded_material"
    assert ungrounded_rejection(answer(), label, data, list(GROUNDED_FIELDS)) is None


class FixedAnswers:
    """A labelling backend (label/result.py's interface) that gives every record one answer."""

    capacity = 1

    def __init__(self, fields: dict[str, str | None]):
        self.fields = fields

    async def label(self, label: str, data: list[str]) -> LabelResult:
        return LabelResult(dict(self.fields))


@pytest.mark.parametrize("reject, state, reason", [
    ([], "to_image", None),
    (["material"], "rejected", "ungrounded_material"),
    (["label_long"], "to_image", None),
])
async def test_label_stage_rejects_only_the_listed_ungrounded_fields(tmp_path, reject, state, reason):
    cfg = Config(path=str(tmp_path / "config.toml"))
    cfg.run.dir = "run"
    cfg.filters.reject_ungrounded = reject
    labelled_store(tmp_path / "run", [None]).close()
    store = Store(cfg.store_path)
    stage = LabelStage(store, FixedAnswers(answer(material="brass")), cfg.filters)
    (task,) = store.lease_for_labelling(1)
    await stage.label_record(task)
    row = store.db.execute("SELECT state, stage, reason, answer IS NOT NULL FROM records").fetchone()
    store.close()
    assert row == (state, "postfilter" if reason else None, reason, 1)
