"""The import graph of the package against docs/architecture.md: every module on a layer, every
import (function-level ones too) to a lower layer, so no cycles; no private names across modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "ilid_async"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`(ilid_async[\w.]*)`\s*\|")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layers() -> dict[str, int]:
    rows = (ROW.match(line) for line in (REPO / "docs" / "architecture.md").read_text().splitlines())
    return {m.group(2): int(m.group(1)) for m in rows if m}


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, str, int]]:
    """(imported module, imported name or "", line) for every import of the package in ``path``."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("ilid_async"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "", node.lineno) if sub in known else (target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("ilid_async")]
    return found


def test_every_module_has_a_layer_in_the_architecture_note():
    known, placed = modules(), layers()
    assert sorted(set(known) - set(placed)) == []  # a new module needs its row
    assert sorted(set(placed) - set(known)) == []  # a row for a module that is gone


def test_every_import_goes_down_a_layer():
    known, placed = modules(), layers()
    upward = []
    for name, path in known.items():
        for target, _, line in imports(name, path, known):
            if target in placed and placed[target] >= placed[name]:
                upward.append(f"{path.relative_to(REPO)}:{line}: {name} (layer {placed[name]}) imports "
                              f"{target} (layer {placed[target]})")
    assert upward == []


def test_no_module_imports_private_names_of_another():
    known = modules()
    private = [f"{path.relative_to(REPO)}:{line}: {target}.{symbol}"
               for name, path in known.items()
               for target, symbol, line in imports(name, path, known)
               if symbol.startswith("_") and target != name]
    assert private == []


def test_the_check_sees_function_level_and_relative_imports(tmp_path):
    # The checker itself: a late relative import and a private name must be found.
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from ..config import _hidden\n    from . import prompt\n")
    known = {"ilid_async.config": Path(), "ilid_async.label.prompt": Path()}
    assert imports("ilid_async.label.probe", source, known) == [
        ("ilid_async.config", "_hidden", 2), ("ilid_async.label.prompt", "", 3)]


CITATION = re.compile(r"rules §(\d+)")
OUTSIDE_CITATION = re.compile(r"\bSPEC\b|DESIGN\.md")


def cited_files() -> list[Path]:
    return [*PACKAGE.rglob("*.py"), *(REPO / "tests").glob("*.py"), *(REPO / "benchmarks").glob("*.py"),
            REPO / "README.md"]


def test_comments_cite_the_rules_inside_the_repo_and_every_cited_section_exists():
    sections = set(re.findall(r"^## (\d+)\. ", (REPO / "docs" / "rules.md").read_text(), re.MULTILINE))
    missing, outside = [], []
    for path in cited_files():
        if path == Path(__file__):
            continue  # the patterns above
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(REPO)}:{number}"
            missing += [f"{where}: rules §{n}" for n in CITATION.findall(line) if n not in sections]
            if OUTSIDE_CITATION.search(line):
                outside.append(f"{where}: {line.strip()}")
    assert sections >= {str(n) for n in range(1, 9)}
    assert not missing, "cited sections docs/rules.md does not have:\n" + "\n".join(missing)
    assert not outside, "rules cited from files outside the repository:\n" + "\n".join(outside)


def test_item_reasons_are_named_in_one_vocabulary():
    """A reason written as a bare string ("timeout") instead of reasons.TIMEOUT is a second home
    for it, and a typo there would invent a reason no report groups."""
    from ilid_async import reasons

    vocabulary = {value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)}
    assert len(vocabulary) > 40  # the module read is the vocabulary, not an empty one
    bare = []
    for name, path in modules().items():
        if name == "ilid_async.reasons":
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        bare += [f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                 if isinstance(node, ast.Constant) and node.value in vocabulary and id(node) not in docstrings]
    assert not bare, "reasons written as strings, not reasons.*:\n" + "\n".join(bare)


def declared_all(path: Path) -> list[str] | None:
    for node in ast.parse(path.read_text(), str(path)).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            return list(ast.literal_eval(node.value))
    return None


def test_every_module_names_its_public_names_and_others_import_only_those():
    known = modules()
    exported = {name: declared_all(path) for name, path in known.items() if path.read_text().strip()}
    assert not [name for name, names in exported.items() if names is None], "modules without __all__"
    for name, names in exported.items():
        path = known[name]
        defined = {n.id for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name)
                   for n in [node]} | {node.name for node in ast.parse(path.read_text()).body
                                       if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        assert set(names) <= defined, f"{name}.__all__ names what it does not define"
    unlisted = []
    for name, path in known.items():
        for target, imported, line in imports(name, path, known):
            if imported and imported != "*" and imported not in (exported.get(target) or ()):
                unlisted.append(f"{path.relative_to(REPO)}:{line}: {imported} is not in {target}.__all__")
    assert not unlisted, "imports of names a module does not export:\n" + "\n".join(unlisted)


def test_the_grounded_fields_are_the_label_fields_but_the_description():
    from ilid_async.fields import GROUNDED_FIELDS, LABEL_FIELDS

    # Two Literal types name them (msgspec and mypy need literals): a new field goes in both.
    assert set(GROUNDED_FIELDS) == set(LABEL_FIELDS) - {"description"}
