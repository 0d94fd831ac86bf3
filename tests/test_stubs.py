"""The committed type stubs (python/homeforge/_core.pyi) cover everything the built extension exports."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import homeforge
from homeforge import _core

STUB = Path(homeforge.__file__).with_name("_core.pyi")


def _stub_names() -> tuple[set[str], dict[str, set[str]]]:
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    top: set[str] = set()
    classes: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
        elif isinstance(node, ast.Assign):
            top.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if isinstance(node, ast.ClassDef):
            classes[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} | {
                n.target.id for n in node.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    return top, classes


def test_stub_is_installed_next_to_the_extension():
    assert STUB.is_file(), f"{STUB} missing: the package must ship _core.pyi"
    assert STUB.with_name("py.typed").is_file(), "py.typed missing"


def test_every_core_name_has_a_stub():
    top, classes = _stub_names()
    exported = {n for n in dir(_core) if not (n.startswith("__") and n.endswith("__"))}
    missing = sorted(exported - top)
    assert not missing, f"names of homeforge._core without a stub (run scripts/gen_stubs.py): {missing}"
    for name in sorted(exported):
        obj = getattr(_core, name)
        if not inspect.isclass(obj):
            continue
        own = {m for m in vars(obj) if not m.startswith("_")}
        lacking = sorted(own - classes.get(name, set()))
        assert not lacking, f"methods of homeforge._core.{name} without a stub: {lacking}"


def test_stub_parses_and_documents_the_module():
    tree = ast.parse(STUB.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), "the stub should carry the module docstring"
