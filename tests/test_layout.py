"""The folders of vlm/ are layers, and imports only run downwards: the model knows nothing of data, training or
inference; inference nothing of training or post-training; nothing in the core knows the experiments or the
command line. Read from the source (every import, including those inside functions), so a lazy import that
breaks the rule is caught as well as one at the top of a file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vlm"

# Each layer may import itself and the layers listed for it, nothing else of vlm.
ALLOWED = {
    "runtime": set(),
    "model": {"runtime"},
    "data": {"model", "runtime"},
    "inference": {"model", "data", "runtime"},
    "evaluation": {"model", "data", "inference", "runtime"},
    "training": {"model", "data", "inference", "evaluation", "runtime"},
    "posttrain": {"model", "data", "inference", "evaluation", "training", "runtime"},
    "experiments": {"model", "data", "inference", "evaluation", "training", "posttrain", "runtime"},
    "cli": {"model", "data", "inference", "evaluation", "training", "posttrain", "experiments", "runtime"},
}


def layer_of(module: str) -> str:
    """vlm.model.decoder -> model; vlm.runtime -> runtime; vlm (the package's own __init__) -> vlm."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "vlm"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def vlm_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a vlm module in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "vlm"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "vlm":
            if node.module == "vlm":  # from vlm import x: x is a module or a name of vlm/__init__.py
                found += [(node.lineno, f"vlm.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.name != "__init__.py")


def test_every_module_belongs_to_a_layer():
    layers = {layer_of(module_name(path)) for path in modules()}
    assert layers <= set(ALLOWED), f"modules outside the layers: {sorted(layers - set(ALLOWED))}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_only_run_downwards(path):
    own = layer_of(module_name(path))
    wrong = [
        f"line {line}: {module}" for line, module in vlm_imports(path) if layer_of(module) not in ALLOWED[own] | {own}
    ]
    assert not wrong, f"{path.name} ({own}) imports from a layer above or beside it: {wrong}"


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The rule is not vacuous: an upward import, even inside a function, is found."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from vlm.training.loop import train\n    from vlm import model\n")
    assert vlm_imports(source) == [(2, "vlm.training.loop"), (3, "vlm.model")]
    assert layer_of("vlm.training.loop") not in ALLOWED["inference"]


def test_importing_the_model_or_inference_loads_no_training_code():
    """What `vlm-caption` loads: the model and inference packages, not the training loop or the reward model."""
    import subprocess
    import sys

    code = (
        "import sys, vlm.inference.predict, vlm.model.checkpoint; "
        "print(sorted(m for m in sys.modules if m.startswith(('vlm.training', 'vlm.posttrain', 'vlm.experiments'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
