"""The shape of the code that issue 18 set (docs/architecture.md): the top level tells the data
flow, the Proxmox VE service stands beside the VM service, no module or function grows past
what one reads at once. Read from the source with ast; nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[2] / "src" / "qdisk"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
MAX_TOP_LEVEL_MODULES = 6


def _modules() -> dict[str, ast.Module]:
    return {str(path.relative_to(SOURCE)): ast.parse(path.read_text(), str(path))
            for path in sorted(SOURCE.rglob("*.py"))}


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_top_level_holds_packages_and_a_few_shared_modules() -> None:
    modules = sorted(path.name for path in SOURCE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules


def test_no_module_and_no_function_is_too_long_to_read_at_once() -> None:
    too_long = []
    for name, tree in _modules().items():
        lines = (SOURCE / name).read_text().count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def test_the_proxmox_ve_service_imports_nothing_of_the_vm_service() -> None:
    borrowed = {name: sorted(module for module in _imported(tree)
                             if module == "qdisk.vm" or module.startswith("qdisk.vm."))
                for name, tree in _modules().items() if name.startswith("pve/")}
    assert {name: modules for name, modules in borrowed.items() if modules} == {}
