"""The import order of the kit: every module imports only from layers below its own (README, "paths")."""

import ast

from support.paths import REPO_ROOT

# Bottom to top. Two units on one layer never import each other.
LAYERS = [["configuration"], ["modeling_gpt2_scratch"], ["formats"], ["preparation", "eval"], ["training"],
          ["prepare_data", "run_pretrain"], ["benchmarks"]]
LAYER_OF = {unit: depth for depth, units in enumerate(LAYERS) for unit in units}


def imported_units(path) -> set[str]:
    """The kit's units that a file imports, at the top or deferred inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & LAYER_OF.keys()


def test_no_module_imports_a_layer_above_or_beside_its_own():
    sources = [p for p in REPO_ROOT.glob("*.py")] + [p for unit in LAYER_OF for p in (REPO_ROOT / unit).rglob("*.py")]
    checked, wrong = 0, []
    for path in sources:
        unit = path.relative_to(REPO_ROOT).parts[0].removesuffix(".py")
        if unit not in LAYER_OF:
            continue
        checked += 1
        for other in imported_units(path) - {unit}:
            if LAYER_OF[other] >= LAYER_OF[unit]:
                wrong.append(f"{path.relative_to(REPO_ROOT)} imports {other}")
    assert checked > 30 and not wrong, wrong  # the walk found the tree, and nothing runs back up


def test_the_checker_sees_deferred_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from training.data import build_data\n    import eval.plot\n")
    assert imported_units(module) == {"training", "eval"}
