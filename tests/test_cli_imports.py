"""Commands import library code, never one another.

A CLI is a module that runs as a command: a package's ``__main__.py`` or a module with a top-level
``if __name__ == "__main__":``. What two commands share lives in a library module both import, so a
command's argument handling, exit codes and printing can change without touching another command.
Imports are read with ``ast`` (every ``import`` in the file, also those inside functions), so nothing
is imported to check them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the product, its analysis and the cluster tools; benchmarks/ and experiments/ still have commands
# that import commands (listed in the report of this change) and join once those are library code
ROOTS = ("uclser_tune", "analysis", "cluster", "benchmarks", "experiments")


def modules(repo: Path, roots: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the roots (a package is its __init__.py)."""
    found = {}
    for root in roots:
        for path in sorted((repo / root).rglob("*.py")):
            parts = list(path.relative_to(repo).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def is_cli(name: str, tree: ast.Module) -> bool:
    def runs_as_main(node: ast.stmt) -> bool:
        test = node.test if isinstance(node, ast.If) else None
        return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators))

    return name.rsplit(".", 1)[-1] == "__main__" or any(runs_as_main(node) for node in tree.body)


def imported(name: str, path: Path, tree: ast.Module) -> dict[str, int]:
    """Every module the file may import -> line: ``import a.b`` names a.b; ``from a import b`` names a
    and a.b (b may be a module); relative imports are resolved against the file's package."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update({alias.name: node.lineno for alias in node.names})
        elif isinstance(node, ast.ImportFrom):
            base = ".".join([*package[:len(package) - node.level + 1], *([node.module] if node.module else [])]) \
                if node.level else node.module
            out.update({base: node.lineno, **{f"{base}.{alias.name}": node.lineno for alias in node.names}})
    return out


def cli_imports(repo: Path, roots: tuple[str, ...], importers: str = "cli") -> list[str]:
    """'importer -> CLI (file:line)' for every module (``importers='cli'``: every CLI) that imports a CLI."""
    found = modules(repo, roots)
    trees = {name: ast.parse(path.read_text(), str(path)) for name, path in found.items()}
    clis = {name for name, tree in trees.items() if is_cli(name, tree)}
    bad = []
    for name, tree in trees.items():
        if importers == "cli" and name not in clis:
            continue
        for target, line in imported(name, found[name], tree).items():
            if target in clis and target != name:
                bad.append(f"{name} -> {target} ({found[name].relative_to(repo)}:{line})")
    return sorted(bad)


def test_no_cli_imports_another_cli():
    assert cli_imports(REPO, ROOTS) == []


def test_no_library_module_of_the_package_imports_a_cli():
    assert cli_imports(REPO, ("uclser_tune",), importers="any") == []


def test_the_package_has_its_commands():
    """The scan sees the commands (an empty scan would pass the tests above)."""
    trees = {n: ast.parse(p.read_text()) for n, p in modules(REPO, ROOTS).items()}
    clis = {n for n, t in trees.items() if is_cli(n, t)}
    assert {"uclser_tune.train", "uclser_tune.retrain", "uclser_tune.search.__main__", "uclser_tune.data.__main__",
            "analysis.__main__", "cluster.local_cluster"} <= clis
    assert "uclser_tune.search.cli" not in clis  # the search's command is its __main__; cli.py is its library


@pytest.mark.parametrize("code, found", [
    ("from pkg import tool", ["pkg.lib -> pkg.tool"]),
    ("from pkg.tool import helper", ["pkg.lib -> pkg.tool"]),
    ("import pkg.tool", ["pkg.lib -> pkg.tool"]),
    ("from . import tool", ["pkg.lib -> pkg.tool"]),
    ("from .tool import helper", ["pkg.lib -> pkg.tool"]),
    ("from pkg import __main__", ["pkg.lib -> pkg.__main__"]),
    ("def f():\n    from pkg.tool import helper", ["pkg.lib -> pkg.tool"]),
    ("from pkg.shared import helper", []),
    ("import pkg", []),  # the package, not its __main__
])
def test_the_scan_finds_a_cli_import(tmp_path, code, found):
    """A fake tree: pkg/tool.py and pkg/__main__.py are CLIs, pkg/shared.py is not; pkg/lib.py (a CLI
    itself) imports with ``code``."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("from pkg.shared import helper\n")
    (pkg / "shared.py").write_text("def helper():\n    pass\n")
    (pkg / "tool.py").write_text("def helper():\n    pass\n\n\nif __name__ == '__main__':\n    helper()\n")
    (pkg / "lib.py").write_text(f"{code}\n\nif __name__ == '__main__':\n    pass\n")
    assert [line.split(" (")[0] for line in cli_imports(tmp_path, ("pkg",))] == found
    (pkg / "lib.py").write_text(f"{code}\n")  # not a CLI: only the whole-package scan names it
    assert cli_imports(tmp_path, ("pkg",)) == []
    assert [line.split(" (")[0] for line in cli_imports(tmp_path, ("pkg",), importers="any")] == found
