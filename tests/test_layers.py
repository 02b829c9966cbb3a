"""The code's shape, read from its imports: a lower layer never imports a higher one, Ray and Optuna
appear only in the search layer of the package, and the package never imports the analysis, the
experiments or the benchmarks (which are not installed with it)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# uclser_tune's modules and subpackages by layer: each may import only its own layer and those below.
# config sits above the registries it takes its names from (views' ops, the encoders).
RANK = {"atomic": 0, "versions": 0, "validation": 0, "dotted": 0, "data": 1, "views": 2, "evaluation": 3,
        "models": 3, "losses": 3, "config": 3, "training": 4, "runs": 5, "train": 5, "embed": 5, "search": 6, "retrain": 7}
# the folders around the package, and what each may import besides itself and the standard library
OUTSIDE = {"analysis": {"uclser_tune"}, "benchmarks": {"uclser_tune"},
           "experiments": {"uclser_tune", "analysis"}}


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def layer_of(path: Path) -> str:
    return path.relative_to(ROOT / "uclser_tune").with_suffix("").parts[0]


def test_no_layer_of_the_package_imports_a_higher_one():
    wrong = []
    for path in sorted((ROOT / "uclser_tune").rglob("*.py")):
        if path.name == "__init__.py" and path.parent.name == "uclser_tune":
            continue
        mine = layer_of(path)
        assert mine in RANK, f"{path.relative_to(ROOT)}: a new layer; give it a rank in RANK"
        for module in imports(path):
            top, _, rest = module.partition(".")
            if top in OUTSIDE:
                wrong.append(f"{path.relative_to(ROOT)} imports {module}: the package never imports {top}/")
            if top in ("ray", "optuna") and mine != "search":
                wrong.append(f"{path.relative_to(ROOT)} imports {module}: Ray and Optuna only in search/")
            if top == "uclser_tune" and rest:
                theirs = rest.split(".")[0]
                if RANK.get(theirs, -1) > RANK[mine]:
                    wrong.append(f"{path.relative_to(ROOT)} ({mine}) imports {module} ({theirs}), a higher layer")
    assert not wrong, "\n".join(wrong)


def test_analysis_benchmarks_and_experiments_import_only_what_is_below_them():
    wrong = []
    for folder, allowed in OUTSIDE.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module in imports(path):
                top = module.split(".")[0]
                if top in {*OUTSIDE, "uclser_tune"} and top != folder and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)
