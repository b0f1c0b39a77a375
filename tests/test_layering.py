"""The layering, as rules over the parsed source (never a list of today's imports):

- the core is flat and ranked: a core module imports only core modules of a lower rank,
  or the `kernels` and `runtime` packages ranked with them;
- the core never imports an edge (training, text, serve, reporting); `commands` alone,
  above the core, wires the edges into sub-commands;
- edges import the core, never each other, except that serve may use text and reporting;
- kernels import nothing of nmt but kernels: never the model;
- nothing imports `cli` but `__main__`, nor `commands` but `cli`;
- only nmt/plan.py decides anything by device type or precision.
`test_a_planted_wrong_way_import_fails` shows that each rule can fail.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import nmt

PACKAGE = Path(nmt.__file__).parent
# the core, bottom up: a module may import the ranks below its own
RANKS = [
    {"errors", "interrupts"},
    {"options", "yaml_file"},
    {"config"},
    {"plan", "tokenizer", "data", "outputs", "kernels"},
    {"corpus", "model"},
    {"runtime", "checkpoint", "scoring", "ensemble"},
    {"constraints"},
    {"search"},
    {"decoding", "loading"},
    {"translate"},
]
EDGES = {"training", "text", "serve", "reporting"}
EDGE_MAY_USE = {"serve": {"text", "reporting"}}
TOP = ["commands", "cli", "__main__"]  # each may import what is below it


def rank(unit: str) -> float:
    """A unit's height: a core rank, above them the edges, then the top."""
    for height, units in enumerate(RANKS):
        if unit in units:
            return height
    if unit in EDGES:
        return len(RANKS)
    return len(RANKS) + 1 + TOP.index(unit)


def unit_of(module: str) -> str:
    """`runtime.graphs` -> `runtime`; a flat module is its own unit ("" is nmt itself)."""
    return module.split(".")[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def nmt_imports(source: str) -> set[str]:
    """The nmt modules (without the `nmt.` prefix) that `source` imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "nmt":
                found.update(alias.name for alias in node.names)
            elif node.module.startswith("nmt."):
                found.add(node.module.removeprefix("nmt."))
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("nmt.") for a in node.names if a.name[:4] == "nmt.")
    return found


def violations(modules: dict[str, str]) -> list[str]:
    """Every import of `modules` (name -> source) that breaks a rule, as a sentence."""
    found = []
    for name, source in modules.items():
        mine = unit_of(name) if name else "__init__"
        for imported in nmt_imports(source):
            theirs = unit_of(imported)
            if mine == theirs and mine in {"kernels", "runtime", "commands", *EDGES}:
                continue  # inside its own package
            if mine == "kernels":
                found.append(f"{name}: kernels never import the rest of nmt ({imported})")
            elif theirs == "cli" and mine != "__main__":
                found.append(f"{name}: nothing imports cli")
            elif theirs == "commands" and mine != "cli":
                found.append(f"{name}: only cli imports commands")
            elif mine in EDGES and theirs in EDGES and theirs not in EDGE_MAY_USE.get(mine, ()):
                found.append(f"{name}: the edge {mine} imports the edge {theirs} ({imported})")
            elif mine not in EDGES and theirs in EDGES and rank(mine) < len(RANKS):
                found.append(f"{name}: the core imports the edge {theirs} ({imported})")
            elif rank(theirs) >= rank(mine) and not (mine in EDGES and theirs in EDGES):
                found.append(f"{name}: imports {imported}, which is not below it")
    return found


def package_modules() -> dict[str, str]:
    return {module_name(p): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_place():
    for name in package_modules():
        unit = unit_of(name) if name else "__init__"
        placed = any(unit in units for units in RANKS) or unit in EDGES or unit in TOP
        assert placed or unit == "__init__", f"nmt/{name}: give it a rank in {__file__}"


def test_imports_follow_the_rules():
    assert violations(package_modules()) == []


PLANTED = [  # (module, the line planted in it, the rule it breaks)
    ("model", "from nmt.translate import Translator", "not below it"),
    ("kernels.packed_lstm", "from nmt.model import Seq2Seq", "kernels never import"),
    ("decoding", "from nmt.training.validation import bleu", "the core imports the edge"),
    ("text.markup", "from nmt.serve.batcher import Limits", "the edge text imports the edge serve"),
    ("reporting.inside", "from nmt import cli", "nothing imports cli"),
]


@pytest.mark.parametrize(("module", "line", "rule"), PLANTED)
def test_a_planted_wrong_way_import_fails(module, line, rule):
    modules = package_modules()
    modules[module] += f"\n{line}\n"

    found = violations(modules)

    assert len(found) == 1 and rule in found[0], found


def test_config_never_sees_torch_and_the_model_never_sees_files():
    def imported(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        return {name.split(".")[0] for name in names}

    assert "torch" not in imported(PACKAGE / "config.py") | imported(PACKAGE / "options.py")
    model = PACKAGE / "model.py"
    assert not {"os", "io", "pathlib", "gzip", "shutil"} & imported(model)
    calls = [n.func for n in ast.walk(ast.parse(model.read_text())) if isinstance(n, ast.Call)]
    assert not [f for f in calls if isinstance(f, ast.Name) and f.id == "open"]


# Lines outside nmt/plan.py that name a device type or compare a precision; none decides
# how to run. Anything else that does belongs in the plan.
BRANCH = re.compile(r'device\.type|is_cuda|"cuda"|"cpu"|precision (==|in|!=)')
EXEMPT = {
    "checkpoint": ['device: str | torch.device = "cpu"'],  # a default
    "training.state": [
        '"cuda": plan.device_rng_state()',
        'plan.set_device_rng_state(rng.get("cuda"))',
    ],
    "kernels.packed_lstm": ["with torch.autocast(x.device.type, enabled=False)"],  # autocast
    "kernels.masked_lstm": ["with torch.autocast(x.device.type, enabled=False)"],  # autocast
    "kernels.recurrence": ["with torch.autocast(embedded.device.type, enabled=False)"],
    "runtime.graphs": ["kind = x.device.type"],  # reads autocast's state for a graph's key
    # the distributed backend, and one GPU per process
    "training.distributed": [
        'if dev.type == "cuda":',
        'dev = torch.device("cuda", local_rank)',
        'backend = "nccl" if dev.type == "cuda" else "gloo"',
    ],
}


def code_lines(source: str) -> list[str]:
    """The lines of `source` outside docstrings and comments."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = source.splitlines()
    return [line.split("  #")[0].strip() for i, line in enumerate(lines, 1) if i not in docstrings]


def test_only_the_plan_decides_by_device_or_precision():
    for name, source in package_modules().items():
        if name == "plan":
            continue
        found = [line for line in code_lines(source) if BRANCH.search(line)]
        unexpected = [line for line in found if not any(e in line for e in EXEMPT.get(name, []))]
        assert not unexpected, f"nmt/{name} decides how to run: {unexpected}"
