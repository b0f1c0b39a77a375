"""The import graph runs one way: config -> tokenizer/data, model -> search ->
translate -> train -> cli. Search and ensemble duck-type the model and import
nothing of ours. Each module may import only what is listed here."""

from __future__ import annotations

import ast
from pathlib import Path

import nmt

ALLOWED = {
    "__init__": set(),
    "__main__": {"cli"},
    "config": set(),
    "distributed": set(),
    "metrics": set(),
    "search": set(),
    "ensemble": set(),
    "gates": set(),
    "curves": set(),
    "report": set(),
    "tokenizer": set(),
    "recurrence": set(),
    "loss": set(),
    "packed_lstm": set(),
    "cpu_decode": {"model"},
    "model": {"config", "loss", "packed_lstm", "recurrence"},
    "data": {"config", "tokenizer"},
    "checkpoint": {"config", "model", "tokenizer"},
    "translate": {
        "checkpoint",
        "config",
        "cpu_decode",
        "data",
        "ensemble",
        "model",
        "search",
        "tokenizer",
    },
    "train": {
        "checkpoint",
        "config",
        "data",
        "distributed",
        "metrics",
        "model",
        "tokenizer",
        "translate",
    },
    "inside": {"gates", "tokenizer", "translate"},
    "cli": {
        "checkpoint",
        "config",
        "curves",
        "data",
        "inside",
        "model",
        "report",
        "train",
        "translate",
    },
}


def nmt_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "nmt":
                names.update(alias.name for alias in node.names)
            elif node.module.startswith("nmt."):
                names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("nmt."))
    return names


def test_imports_follow_the_layering():
    modules = sorted(Path(nmt.__file__).parent.glob("*.py"))

    unlisted = [p.name for p in modules if p.stem not in ALLOWED]
    assert not unlisted, f"add {unlisted} to ALLOWED in {__file__}"
    for path in modules:
        extra = nmt_imports(path) - ALLOWED[path.stem]
        assert not extra, f"nmt/{path.name} must not import {sorted(extra)}"


def test_the_model_never_sees_files_and_config_never_sees_torch():
    package = Path(nmt.__file__).parent

    assert "import torch" not in (package / "config.py").read_text()
    assert "open(" not in (package / "model.py").read_text()
