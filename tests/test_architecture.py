"""The package's shape, checked: stages import only earlier stages, h5py in one module, library
errors without command-line flags (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "salcurate"

#: Foundation modules: importable from anywhere; they import only each other.
FOUNDATION = ("errors", "config", "events", "paper", "stats", "imageio", "crf", "segmentation_metrics", "_version",
              "distributed", "nn")
#: The pipeline's stages in order; a module may import its own stage, earlier ones and the foundation.
STAGES = ("data", "scoring", "selection", "training", "evaluation", "report")
#: Orchestrators at the top: they may import everything.
TOP = ("cli", "demo", "__main__", "__init__")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        out.append((name, path))
    return out


def _imports(path: Path) -> set[str]:
    """Every ``salcurate.*`` module this file imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("salcurate"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("salcurate"):
            if node.module != "salcurate":  # ``from salcurate import distributed``: the names are the modules
                found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _kind(module: str) -> tuple[str, int]:
    """("foundation"|"stage"|"top"|"unknown", stage index) of a dotted module name."""
    parts = module.split(".")
    if len(parts) == 1:
        return "top", -1
    head = parts[1]
    if head in FOUNDATION:
        return "foundation", -1
    if head in STAGES:
        return "stage", STAGES.index(head)
    if head in TOP:
        return "top", -1
    return "unknown", -1


def test_every_module_has_a_place() -> None:
    unknown = [m for m, _ in _modules() if _kind(m)[0] == "unknown"]
    assert not unknown, f"modules outside the documented layout (add them to docs/architecture.md): {unknown}"


def test_no_module_imports_a_later_stage() -> None:
    known = {m for m, _ in _modules()}
    bad = []
    for module, path in _modules():
        kind, stage = _kind(module)
        if kind == "top":
            continue
        for target in _imports(path):
            if target not in known:  # ``from salcurate.x import name``: the name is not a module
                continue
            tkind, tstage = _kind(target)
            if tkind == "top":
                bad.append(f"{module} -> {target} (the CLI and demo sit on top)")
            elif kind == "foundation" and tkind == "stage":
                bad.append(f"{module} -> {target} (foundation modules import no stage)")
            elif kind == "stage" and tkind == "stage" and tstage > stage:
                bad.append(f"{module} -> {target} (stage {STAGES[tstage]} comes after {STAGES[stage]})")
    assert not bad, "imports against the pipeline's direction:\n" + "\n".join(bad)


def test_h5py_is_imported_by_the_store_only() -> None:
    users = [m for m, path in _modules() if re.search(r"^\s*(import h5py|from h5py)", path.read_text(), re.M)]
    assert users == ["salcurate.data.store"]


def _message_texts(path: Path) -> list[tuple[int, str]]:
    """Every string literal of this file that is not a docstring (messages, warnings, hints), with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):  # setting(..., flag="--crf/--no-crf") declares a flag: not a message
        if isinstance(node, ast.keyword) and node.arg == "flag":
            docstrings.update(id(sub) for sub in ast.walk(node.value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
            out.append((node.lineno, text))
            docstrings.update(id(v) for v in node.values)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
    return out


def test_library_messages_name_parameters_not_flags() -> None:
    """Library messages name parameters (``batch_size``); only the CLI says ``--batch-size``."""
    flagged = []
    for module, path in _modules():
        if _kind(module)[0] == "top":
            continue
        for line, text in _message_texts(path):
            # a flag inside a `salcurate ...` or `torchrun ...` hint is part of a command a person types: allowed
            text = re.sub(r"`(salcurate|torchrun) [^`]*`", "", text)
            if re.search(r"(?<![\w-])--[a-z]", text):
                flagged.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text[:90]}")
    assert not flagged, "library messages that name command-line flags:\n" + "\n".join(flagged)


@pytest.mark.parametrize("module", [m for m, _ in _modules() if m.count(".") == 1 and _kind(m)[0] == "stage"])
def test_each_stage_says_what_it_takes_and_gives(module: str) -> None:
    import importlib

    doc = importlib.import_module(module).__doc__ or ""
    assert doc.startswith("Stage") and "takes" in doc.lower() and "gives" in doc.lower(), \
        f"{module}: the package docstring should say which stage it is, what it takes and what it gives"
