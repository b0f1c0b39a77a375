"""The import graph runs one way: config -> plan, tokenizer, data -> kernels -> model ->
search -> translate / train -> commands -> cli. Search and ensemble duck-type the model
(search imports only the step rules), train never imports translate, and the decisions
about devices and precision live in nmt/plan.py. Checked on the parsed source."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nmt

PACKAGE = Path(nmt.__file__).parent
KERNELS = {
    *("kernels.captured_loss", "kernels.dropout", "kernels.fused_loss"),
    *("kernels.masked_lstm", "kernels.packed_lstm", "kernels.parallel_decoder"),
}
ALLOWED = {  # module -> the nmt modules it may import
    "__init__": set(),
    "__main__": {"cli"},
    "config": set(),
    "distributed": {"config"},
    "ensemble": set(),
    "figures": set(),
    "metrics": {"config", "figures", "outputs"},
    "outputs": {"config"},
    "scoring": set(),
    "search": {"scoring"},
    "kernels": set(),
    **{name: set() for name in KERNELS},
    "gates": set(),
    "kernels.recurrence": {"gates"},
    "kernels.masked_lstm": {"gates"},
    "plan": {"config"},
    "tokenizer": {"config"},
    "data": {"config"},
    "report": {"figures"},
    "corpus": {"config", "data", "plan", "tokenizer"},
    "model": {"config", "plan", *KERNELS, "kernels.recurrence"},
    "kernels.prepared": {"gates", "model"},
    "kernels.graphs": {"model", "plan"},
    "checkpoint": {"config", "model", "outputs", "plan", "tokenizer"},
    "optimize": {"config", "distributed", "model", "plan", "tokenizer"},
    "decoding": {"config", "corpus", "plan", "search", "scoring", "tokenizer"},
    "validation": {"config", "corpus", "decoding", "metrics", "plan", "scoring", "tokenizer"},
    "translate": {
        *("checkpoint", "config", "corpus", "decoding", "ensemble", "kernels.prepared", "plan"),
        *("kernels.graphs", "scoring", "tokenizer"),
    },
    "train": {
        *("checkpoint", "config", "corpus", "data", "distributed", "metrics", "model"),
        *("kernels.captured_loss", "optimize", "plan", "tokenizer", "validation"),
    },
    "inside": {"figures", "gates", "model", "tokenizer", "translate"},
    "documents": {"decoding", "tokenizer", "translate"},
    "markup": {"documents", "translate"},
    "batcher": {"config", "documents", "markup", "translate"},
    "openapi": set(),
    "serve": {"batcher", "config", "decoding", "inside", "openapi", "translate"},
    "commands": {
        *("checkpoint", "config", "data", "documents", "inside", "markup", "metrics", "outputs"),
        *("report", "serve", "train", "translate"),
    },
    "cli": {"commands", "config"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[1:] and parts[-1] == "__init__" else parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """-> (the nmt modules, the other top-level packages) that `path` imports."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "nmt":
                ours.update(alias.name for alias in node.names)
            elif node.module.startswith("nmt."):
                ours.add(node.module.removeprefix("nmt."))
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                (ours.add(".".join(parts[1:])) if parts[0] == "nmt" else others.add(parts[0]))
    return ours, others


def test_imports_follow_the_layering():
    modules = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}

    unlisted = [name for name in modules if name not in ALLOWED]
    assert not unlisted, f"add {unlisted} to ALLOWED in {__file__}"
    for name, path in modules.items():
        extra = imports(path)[0] - ALLOWED[name]
        assert not extra, f"nmt/{path.relative_to(PACKAGE)} must not import {sorted(extra)}"


def test_config_never_sees_torch_and_the_model_never_sees_files():
    assert "torch" not in imports(PACKAGE / "config.py")[1]
    model = PACKAGE / "model.py"
    assert not {"os", "io", "pathlib", "gzip", "shutil"} & imports(model)[1]
    calls = [n.func for n in ast.walk(ast.parse(model.read_text())) if isinstance(n, ast.Call)]
    assert not [f for f in calls if isinstance(f, ast.Name) and f.id == "open"]


# Lines outside nmt/plan.py that name a device type or compare a precision; none decides
# how to run. Anything else that does belongs in the plan.
BRANCH = re.compile(r'device\.type|is_cuda|"cuda"|"cpu"|precision (==|in|!=)')
EXEMPT = {
    "cli": ['p.add_argument("--device", default="cpu"'],  # default values
    "checkpoint": [
        'device: str | torch.device = "cpu"',
        '"cuda": plan.device_rng_state()',
        'plan.set_device_rng_state(rng.get("cuda"))',
    ],  # a default, a key name
    "translate": ['device: str = "cpu"'],  # a default
    "kernels.packed_lstm": ["with torch.autocast(x.device.type, enabled=False)"],  # autocast
    "kernels.masked_lstm": ["with torch.autocast(x.device.type, enabled=False)"],  # autocast
    "kernels.recurrence": ["with torch.autocast(embedded.device.type, enabled=False)"],
    "kernels.graphs": ["kind = x.device.type"],  # reads autocast's state for a graph's key
    # the distributed backend, and one GPU per process
    "distributed": [
        'if dev.type == "cuda":',
        'dev = torch.device("cuda", local_rank)',
        'backend = "nccl" if dev.type == "cuda" else "gloo"',
    ],
}


def code_lines(path: Path) -> list[str]:
    """The lines of `path` outside docstrings and comments."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = path.read_text().splitlines()
    return [line.split("  #")[0].strip() for i, line in enumerate(lines, 1) if i not in docstrings]


def test_only_the_plan_decides_by_device_or_precision():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name == "plan":
            continue
        found = [line for line in code_lines(path) if BRANCH.search(line)]
        unexpected = [line for line in found if not any(e in line for e in EXEMPT.get(name, []))]
        assert not unexpected, f"nmt/{path.relative_to(PACKAGE)} decides how to run: {unexpected}"
