"""Tests of ilid_async.filters: rules §2 (pre-filter), rules §3 no-value rule, rules §4 (post-filter)."""

from __future__ import annotations

import copy

import pytest

from ilid_async import reasons
from ilid_async.filters import (
    MAX_FOLDER_BYTES,
    Cleaned,
    Labels,
    Rejected,
    apply_no_value_rule,
    clean_field,
    compile_tradename,
    folder_name,
    postfilter,
    prefilter,
    prefilter_record,
)

ACME = compile_tradename(r"acme(?:\s+tools)?")


def test_reason_constants() -> None:
    assert reasons.PREFILTER == ("empty_label", "empty_data")
    assert reasons.POSTFILTER == ("missing_label_short", "missing_label_long", "unsafe_folder")
    assert reasons.DUPLICATE_IMAGE_URL == "duplicate_image_url"


# --- compile_tradename ---------------------------------------------------------


@pytest.mark.parametrize("regex", [None, ""], ids=["none", "empty"])
def test_compile_tradename_nothing(regex: str | None) -> None:
    assert compile_tradename(regex) is None


def test_compile_tradename_is_case_insensitive() -> None:
    pattern = compile_tradename("acme")
    assert pattern is not None
    assert pattern.sub("", "ACME Acme aCmE acme x") == "    x"


def test_compile_tradename_invalid_raises_value_error() -> None:
    with pytest.raises(ValueError, match="tradename"):
        compile_tradename("acme(")


# --- prefilter_record: rules §2 rules 2..7 --------------------------------------------


@pytest.mark.parametrize(
    ("label", "data", "tradename", "expected"),
    [
        # rule 2
        pytest.param("", ["x"], None, Rejected(reasons.EMPTY_LABEL), id="r2-empty-label"),
        # rule 2 before rule 3: both empty -> label reason
        pytest.param("", [], None, Rejected(reasons.EMPTY_LABEL), id="r2-before-r3"),
        # rule 3
        pytest.param("Bolt", [], None, Rejected(reasons.EMPTY_DATA), id="r3-no-data"),
        pytest.param("Bolt", ["", ""], None, Rejected(reasons.EMPTY_DATA), id="r3-data-emptied"),
        pytest.param("Bolt", ["", "steel", ""], None, Cleaned("Bolt", ["steel"]), id="r3-drops-empty-strings"),
        # rule 4
        pytest.param(
            "Hex\tBolt\n",
            ["\r\nzinc\tplated\r"],
            None,
            Cleaned("Hex Bolt", ["zinc plated"]),
            id="r4-newline-cr-tab",
        ),
        # rule 5
        pytest.param(
            "ACME Hex Bolt",
            ["by Acme Tools", "acme"],
            ACME,
            Cleaned("Hex Bolt", ["by"]),
            id="r5-tradename-case-insensitive",
        ),
        pytest.param(
            "ACME Hex Bolt",
            ["acme"],
            None,
            Cleaned("ACME Hex Bolt", ["acme"]),
            id="r5-no-tradename-keeps-text",
        ),
        pytest.param("Acme", ["steel"], ACME, Rejected(reasons.EMPTY_LABEL), id="r5-label-only-tradename"),
        # rule 6
        pytest.param(
            "Bolt M12x40",
            ["DIN 933", "length 40mm", "8.8"],
            None,
            Cleaned("Bolt Mx", ["DIN", "length mm", "."]),
            id="r6-digit-runs",
        ),
        pytest.param("Bolt", ["٣٤ mm"], None, Cleaned("Bolt", ["mm"]), id="r6-unicode-digits"),
        pytest.param("12345", ["steel"], None, Rejected(reasons.EMPTY_LABEL), id="r6-label-only-digits"),
        pytest.param("Bolt", ["123", "4 5"], None, Rejected(reasons.EMPTY_DATA), id="r6-data-only-digits"),
        # rule 7
        pytest.param(
            "Hex   Bolt",
            ["zinc \u00a0  plated", "a\u2003b"],
            None,
            Cleaned("Hex Bolt", ["zinc plated", "a b"]),
            id="r7-collapse-whitespace",
        ),
        pytest.param(
            "Bolt",
            ["  ", "\n", "steel", "\t"],
            None,
            Cleaned("Bolt", ["steel"]),
            id="r7-whitespace-only-data-dropped",
        ),
        pytest.param("   ", ["steel"], None, Rejected(reasons.EMPTY_LABEL), id="r7-whitespace-only-label"),
        pytest.param("Bolt", [" ", "\t\n"], None, Rejected(reasons.EMPTY_DATA), id="r7-all-data-whitespace"),
        pytest.param(
            "Bolt 12 mm",
            ["steel"],
            None,
            Cleaned("Bolt mm", ["steel"]),
            id="r7-space-left-by-digits",
        ),
        pytest.param(
            "Acme 500 Bolt",
            ["Acme 20 x 30"],
            ACME,
            Cleaned("Bolt", ["x"]),
            id="r5-r6-r7-together",
        ),
    ],
)
def test_prefilter_record(
    label: str, data: list[str], tradename, expected: Cleaned | Rejected
) -> None:
    assert prefilter_record(label, data, tradename) == expected


def test_prefilter_record_does_not_modify_input() -> None:
    data = ["  a1 ", ""]
    prefilter_record("L", data, None)
    assert data == ["  a1 ", ""]


# --- prefilter (batch, with rule 1) -----------------------------------------------


def _rec(url: str, label: str, data: list[str], **extra: str) -> dict:
    return {"url": url, "web": {"label": label, "data": data}, **extra}


def test_prefilter_dedup_keeps_first() -> None:
    records = [
        _rec("http://s/a.jpg", "First 1", ["x"]),
        _rec("http://s/b.jpg", "Other", ["y"]),
        _rec("http://s/a.jpg", "Second", ["z"]),
    ]
    kept, rejected = prefilter(records, None)
    assert [(r["url"], r["web"]["label"]) for r in kept] == [
        ("http://s/a.jpg", "First"),
        ("http://s/b.jpg", "Other"),
    ]
    assert rejected == [(records[2], reasons.DUPLICATE_IMAGE_URL)]


def test_prefilter_dedup_runs_before_other_rules() -> None:
    # The first record is dropped for its label, but its URL still counts as seen.
    records = [_rec("u", "", ["x"]), _rec("u", "Good", ["x"])]
    kept, rejected = prefilter(records, None)
    assert kept == []
    assert [reason for _, reason in rejected] == [reasons.EMPTY_LABEL, reasons.DUPLICATE_IMAGE_URL]


def test_prefilter_cleans_and_keeps_other_keys_without_mutating() -> None:
    records = [
        _rec("u1", "ACME\tBolt 12", ["Acme steel", ""], page_url="http://s/p1", shop="s"),
        _rec("u2", "", ["x"]),
        _rec("u3", "Nut", ["", ""]),
        _rec("u4", "Washer", ["  ", "99"]),
    ]
    before = copy.deepcopy(records)
    kept, rejected = prefilter(records, ACME)
    assert kept == [
        {"url": "u1", "web": {"label": "Bolt", "data": ["steel"]}, "page_url": "http://s/p1", "shop": "s"}
    ]
    assert [(r["url"], reason) for r, reason in rejected] == [
        ("u2", reasons.EMPTY_LABEL),
        ("u3", reasons.EMPTY_DATA),
        ("u4", reasons.EMPTY_DATA),
    ]
    assert records == before


def test_prefilter_missing_web_fields_are_empty() -> None:
    kept, rejected = prefilter([{"url": "u"}, {"url": "v", "web": {"label": "L", "data": None}}], None)
    assert kept == []
    assert [reason for _, reason in rejected] == [reasons.EMPTY_LABEL, reasons.EMPTY_DATA]


# --- rules §3 no-value rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        # material / finish: none, not, N/A, without, unknown as whole words
        pytest.param("material", "none", None, id="material-none"),
        pytest.param("material", "None.", None, id="material-None-dot"),
        pytest.param("material", "N/A", None, id="material-N/A"),
        pytest.param("material", "n/a", None, id="material-n/a"),
        pytest.param("material", "n.a.", None, id="material-n.a."),
        pytest.param("material", "Material: N/A (not given)", None, id="material-N/A-in-sentence"),
        pytest.param("material", "not specified", None, id="material-not"),
        pytest.param("material", "without coating", None, id="material-without"),
        pytest.param("material", "UNKNOWN", None, id="material-unknown-upper"),
        pytest.param("material_finish", "not mentioned", None, id="finish-not"),
        pytest.param("material_finish", "Without", None, id="finish-without"),
        # whole words only: these survive
        pytest.param("material", "notched steel", "notched steel", id="material-notched"),
        pytest.param("material", "nonetheless steel", "nonetheless steel", id="material-nonetheless"),
        pytest.param("material_finish", "knotty pine", "knotty pine", id="finish-knotty"),
        pytest.param("material", "stainless steel", "stainless steel", id="material-plain"),
        pytest.param("material", "sin/a alloy", "sin/a alloy", id="material-n/a-inside-word"),
        pytest.param("material", "n.a.b alloy", "n.a.b alloy", id="material-n.a.b"),
        pytest.param("material_finish", "unknownish", "unknownish", id="finish-unknownish"),
        # labels: none, not, N/A, unknown ...
        pytest.param("label_short", "None", None, id="label-short-none"),
        pytest.param("label_short", "N/A", None, id="label-short-N/A"),
        pytest.param("label_long", "not available", None, id="label-long-not"),
        pytest.param("label_long", "Unknown product", None, id="label-long-unknown"),
        # ... but not "without", and whole words only
        pytest.param("label_long", "bolt without head", "bolt without head", id="label-without-kept"),
        pytest.param("label_short", "notched bolt", "notched bolt", id="label-notched"),
        # description is untouched
        pytest.param("description", "not for outdoor use", "not for outdoor use", id="description-not"),
        pytest.param("description", "N/A", "N/A", id="description-N/A"),
        # empty / whitespace-only -> None for every field
        pytest.param("description", "  \n", None, id="description-whitespace"),
        pytest.param("label_short", "", None, id="label-empty"),
        pytest.param("material", " ", None, id="material-blank"),
        pytest.param("material", None, None, id="material-None-stays"),
    ],
)
def test_no_value_rule(key: str, value: str | None, expected: str | None) -> None:
    assert apply_no_value_rule({key: value})[key] == expected


def test_no_value_rule_whole_record_returns_new_dict() -> None:
    fields = {
        "label_short": "hex bolt",
        "label_long": "hex head bolt",
        "description": "Not coated.",
        "material": "steel",
        "material_finish": "without",
    }
    out = apply_no_value_rule(fields)
    assert out == {**fields, "material_finish": None}
    assert fields["material_finish"] == "without"  # input untouched


# --- clean_field ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        pytest.param(None, {}, None, id="none"),
        pytest.param("Hex, bolt! (M12)", {}, "Hex bolt M12", id="punctuation-removed"),
        pytest.param("a-b.c_d e", {}, "a-b.c_d e", id="keeps-dash-dot-underscore-space"),
        pytest.param("a-b.c_d", {"keep_dot": False}, "a-bc_d", id="drops-dot-when-asked"),
        pytest.param("  ##bolt##  ", {}, "bolt", id="stripped-after-removal"),
        pytest.param("abc", {}, None, id="3-chars-null"),
        pytest.param("abcd", {}, "abcd", id="4-chars-kept"),
        pytest.param("ab!!!", {}, None, id="short-after-removal"),
        pytest.param(" abc ", {}, None, id="short-after-strip"),
        pytest.param("ab", {"min_field_length": 2}, "ab", id="custom-min-length"),
        pytest.param("abcd", {"min_field_length": 5}, None, id="custom-min-length-null"),
        pytest.param("Schraube Größe 10€", {}, "Schraube Größe 10", id="unicode-letters-kept"),
        pytest.param("½ inch", {}, "½ inch", id="unicode-numeric-is-word-char"),
        pytest.param("ボルト 鋼", {}, "ボルト 鋼", id="cjk-kept"),
        pytest.param("Bolt\n\tsteel", {}, "Bolt\n\tsteel", id="inner-whitespace-kept"),
        pytest.param("Bolt/Nut\\Set", {}, "BoltNutSet", id="separators-removed"),
    ],
)
def test_clean_field(value: str | None, kwargs: dict, expected: str | None) -> None:
    assert clean_field(value, **kwargs) == expected


# --- folder_name --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label_short", "expected"),
    [
        pytest.param("hex bolt", "hex_bolt", id="join-underscore"),
        pytest.param("  hex   head\tbolt ", "hex_head_bolt", id="whitespace-runs"),
        pytest.param("m.x bolt", "mx_bolt", id="dot-removed"),
        pytest.param("hex-bolt_a", "hex-bolt_a", id="dash-underscore-kept"),
        pytest.param("bolt/../etc", "boltetc", id="separator-and-dots-removed"),
        pytest.param("....", None, id="only-dots-empty"),
        pytest.param(".", None, id="dot"),
        pytest.param("..", None, id="dotdot"),
        pytest.param("-", "-", id="single-dash-is-safe"),
        pytest.param("- - -", "-_-_-", id="dashes"),
        pytest.param("", None, id="empty"),
        pytest.param("!!!", None, id="punctuation-only"),
        pytest.param("a\x00b", "ab", id="nul-removed"),
        pytest.param("x" * MAX_FOLDER_BYTES, "x" * MAX_FOLDER_BYTES, id="max-bytes-ok"),
        pytest.param("x" * (MAX_FOLDER_BYTES + 1), None, id="too-long"),
        pytest.param("é" * (MAX_FOLDER_BYTES // 2 + 1), None, id="too-long-in-utf8-bytes"),
        # Like a Windows device name, but not one: kept as they are.
        pytest.param("cons", "cons", id="not-a-device-cons"),
        pytest.param("icon", "icon", id="not-a-device-icon"),
        pytest.param("com10", "com10", id="not-a-device-com10"),
        pytest.param("con rod", "con_rod", id="not-a-device-con-rod"),
    ],
)
def test_folder_name(label_short: str, expected: str | None) -> None:
    assert folder_name(label_short) == expected


@pytest.mark.parametrize(
    ("label_short", "expected"),
    [
        pytest.param("con", "con_", id="con"),
        pytest.param("CON", "CON_", id="upper-case"),
        pytest.param("Nul", "Nul_", id="mixed-case"),
        pytest.param("prn", "prn_", id="prn"),
        pytest.param("aux", "aux_", id="aux"),
        pytest.param("com1", "com1_", id="com1"),
        pytest.param("COM9", "COM9_", id="com9"),
        pytest.param("lpt1", "lpt1_", id="lpt1"),
        pytest.param("lpt9", "lpt9_", id="lpt9"),
        pytest.param("com0", "com0_", id="com0"),
        pytest.param("com\u00b9", "com\u00b9_", id="com-superscript-one"),
        pytest.param("  con  ", "con_", id="spaces-around"),
        pytest.param("con.", "con_", id="trailing-dot"),
    ],
)
def test_folder_name_avoids_windows_device_names(label_short: str, expected: str) -> None:
    assert folder_name(label_short) == expected


def test_postfilter_folder_avoids_windows_device_names() -> None:
    assert postfilter({**GOOD, "label_short": "COM1"}).folder == "com1_"
    assert postfilter({**GOOD, "label_short": "Aux"}, min_field_length=1).folder == "aux_"


# --- postfilter ---------------------------------------------------------------------


GOOD = {
    "label_short": "Hex Bolt",
    "label_long": "Hexagon Head Bolt, Zinc-Plated",
    "description": "A Hexagon bolt (zinc plated) for M.E. use!",
    "material": "Stainless STEEL",
    "material_finish": "Zinc-Plated",
}


def test_postfilter_good_record() -> None:
    assert postfilter(GOOD) == Labels(
        label_short="hex bolt",
        label_long="hexagon head bolt zinc-plated",
        description="A Hexagon bolt zinc plated for M.E. use",
        material="stainless steel",
        material_finish="zinc-plated",
        folder="hex_bolt",
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # label presence and cleaning; label_short is checked first
        pytest.param({"label_short": None}, Rejected(reasons.MISSING_LABEL_SHORT), id="short-null"),
        pytest.param({"label_short": "abc"}, Rejected(reasons.MISSING_LABEL_SHORT), id="short-too-short"),
        pytest.param({"label_short": "a!b!c!"}, Rejected(reasons.MISSING_LABEL_SHORT), id="short-short-after-clean"),
        pytest.param({"label_long": None}, Rejected(reasons.MISSING_LABEL_LONG), id="long-null"),
        pytest.param({"label_long": "?!"}, Rejected(reasons.MISSING_LABEL_LONG), id="long-empty-after-clean"),
        pytest.param(
            {"label_short": None, "label_long": None},
            Rejected(reasons.MISSING_LABEL_SHORT),
            id="both-null-short-first",
        ),
        pytest.param(
            {"label_short": "abc", "label_long": None},
            Rejected(reasons.MISSING_LABEL_SHORT),
            id="short-cleaned-null-before-long-missing",
        ),
        # folder: label "...." survives clean() (dots kept) but its folder is empty
        pytest.param({"label_short": "...."}, Rejected(reasons.UNSAFE_FOLDER), id="dots-label-unsafe-folder"),
        pytest.param({"label_short": "x" * 201}, Rejected(reasons.UNSAFE_FOLDER), id="long-label-unsafe-folder"),
        pytest.param(
            {"label_short": "....", "label_long": None},
            Rejected(reasons.MISSING_LABEL_LONG),
            id="missing-long-before-unsafe-folder",
        ),
    ],
)
def test_postfilter_rejects(changes: dict, expected: Rejected) -> None:
    assert postfilter({**GOOD, **changes}) == expected


def test_postfilter_missing_keys() -> None:
    assert postfilter({}) == Rejected(reasons.MISSING_LABEL_SHORT)
    assert postfilter({"label_short": "hex bolt"}) == Rejected(reasons.MISSING_LABEL_LONG)


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        pytest.param({"label_short": "HEX BOLT M.12"}, "label_short", "hex bolt m.12", id="short-lower-dot-kept"),
        pytest.param({"label_short": "HEX BOLT M.12"}, "folder", "hex_bolt_m12", id="folder-without-dot"),
        pytest.param({"label_short": "- - -"}, "folder", "-_-_-", id="folder-dashes"),
        pytest.param({"label_short": "Größe Bolt"}, "folder", "größe_bolt", id="folder-unicode-lower"),
        pytest.param({"description": "Keeps Case."}, "description", "Keeps Case.", id="description-case-kept"),
        pytest.param({"description": "abc"}, "description", None, id="description-too-short"),
        pytest.param({"description": None}, "description", None, id="description-null"),
        pytest.param({"material": "ABS"}, "material", None, id="material-3-chars"),
        pytest.param({"material": "BRASS"}, "material", "brass", id="material-lower"),
        pytest.param({"material": None}, "material", None, id="material-null"),
        pytest.param({"material_finish": "RED, Glossy"}, "material_finish", "red glossy", id="finish-lower-clean"),
        pytest.param({"material_finish": "@@@"}, "material_finish", None, id="finish-empty-after-clean"),
    ],
)
def test_postfilter_fields(changes: dict, field: str, expected: str | None) -> None:
    result = postfilter({**GOOD, **changes})
    assert isinstance(result, Labels)
    assert getattr(result, field) == expected


def test_postfilter_min_field_length() -> None:
    fields = {**GOOD, "label_short": "nut", "material": "abs"}
    assert postfilter(fields) == Rejected(reasons.MISSING_LABEL_SHORT)
    result = postfilter(fields, min_field_length=3)
    assert isinstance(result, Labels)
    assert (result.label_short, result.material, result.folder) == ("nut", "abs", "nut")


def test_no_value_then_postfilter() -> None:
    # The LLM stage applies the no-value rule, then the post-filter drops the record.
    fields = apply_no_value_rule({**GOOD, "label_short": "N/A", "material": "notched steel"})
    assert postfilter(fields) == Rejected(reasons.MISSING_LABEL_SHORT)
    kept = postfilter(apply_no_value_rule({**GOOD, "material": "notched steel", "material_finish": "none"}))
    assert isinstance(kept, Labels)
    assert (kept.material, kept.material_finish) == ("notched steel", None)
