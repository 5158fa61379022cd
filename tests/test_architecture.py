"""The shape of the code: the floors of the import graph (import-linter's contracts in
pyproject.toml), no import cycle between modules, and imports that name where things live."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[1] / "src" / "vidzoo"
# Packages whose __init__ loads its names lazily, for users: library code imports the module that
# defines a name instead, so the import graph (and the contracts) see the real dependency.
LAZY_PACKAGES = ("vidzoo.models", "vidzoo.train")


def test_the_layered_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], capture_output=True, text=True, cwd=SRC.parents[1])
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_no_module_is_part_of_an_import_cycle() -> None:
    # Every import counts, those inside functions too: none may lead back to the importer.
    graph = grimp.build_graph("vidzoo", exclude_type_checking_imports=True)
    cycles = [
        f"{module} -> {imported} -> ... -> {module}"
        for module in sorted(graph.modules)
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if graph.chain_exists(importer=imported, imported=module)
    ]
    assert cycles == []


def test_library_code_imports_names_from_their_modules() -> None:
    pattern = re.compile(rf"^\s*from ({'|'.join(map(re.escape, LAZY_PACKAGES))}) import ", re.M)
    offenders = [str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
                 if path.name != "__init__.py" and pattern.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
