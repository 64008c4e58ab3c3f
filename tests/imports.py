"""The package modules a module imports when it runs, transitively, read from the source (no import):
what a DVC stage's code deps must cover (`covered`: a file is covered by its own path or a folder above
it). `if TYPE_CHECKING:` blocks are skipped; imports inside functions count (the CLI and the stages' entries
import lazily), and importing a module runs its packages' __init__ files."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_file(name: str) -> Path | None:
    base = SRC / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def direct_imports(name: str) -> set[str]:
    path = module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in child.names)   # `from pkg import module`
            visit(child)

    visit(ast.parse(path.read_text()))
    return {n for n in found if n.split(".")[0] == "avbias" and module_file(n) is not None}


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def imported_files(*entries: str) -> set[Path]:
    """Source files of every package module the entries import, transitively (the entries included)."""
    seen: set[str] = set()
    todo = [p for e in entries for p in _with_parents(e)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name == "avbias.methods":   # registers every method module in the package
            todo.extend(f"avbias.methods.{p.stem}" for p in (SRC / "avbias/methods").glob("*.py")
                        if p.stem != "__init__")
        for dep in direct_imports(name):
            todo.extend(_with_parents(dep))
    return {module_file(n) for n in seen}   # type: ignore[misc]


def function_imports(module: str, function: str) -> set[str]:
    """Package modules imported inside one function of a module (the CLI's lazy per-stage imports)."""
    path = module_file(module)
    assert path is not None
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == function:
            names = set()
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    names.update(alias.name for alias in sub.names)
                elif isinstance(sub, ast.ImportFrom) and sub.module:
                    names.add(sub.module)
                    names.update(f"{sub.module}.{alias.name}" for alias in sub.names)
            return {n for n in names if n.startswith("avbias") and module_file(n) is not None}
    raise AssertionError(f"{module}.{function} not found")


def module_level_imports(module: str) -> set[str]:
    path = module_file(module)
    assert path is not None
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("avbias") and module_file(n) is not None}


def stage_code(*commands: str) -> set[Path]:
    """What `avbias <command>` runs: the CLI module, its module-level imports and each command's imports."""
    entries = module_level_imports("avbias.cli")
    for command in commands:
        entries |= function_imports("avbias.cli", f"cmd_{command.replace('-', '_')}")
    return imported_files(*entries) | {SRC / "avbias/cli.py", SRC / "avbias/__main__.py"}


def covered(path: str, deps: list[str]) -> bool:
    """Whether a repository path is declared by deps: itself, or a folder holding it."""
    parts = Path(path).parts
    return any(parts[: len(Path(d).parts)] == Path(d).parts for d in deps)
