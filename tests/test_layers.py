"""The tree's rules, checked rather than hoped: the floors of the flow (import-linter's
contracts in pyproject.toml), no import cycle, no reaching into another module's private
names, lazy imports only where startup time needs them, and light worker processes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bulkload
from bulkload._errors import ExitCode
from bulkload._load import pool
from bulkload.cli import _exit

PACKAGE = Path(bulkload.__file__).parent
ROOT = PACKAGE.parent
#: The faces: their function-local imports keep `bulkload --help` fast (the CLI) or leave
#: optional extras unloaded until used (dask).
LAZY_ALLOWED = {"bulkload.cli", "bulkload.dask", "bulkload.demo", "bulkload"}


def modules() -> dict[str, tuple[Path, ast.Module]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = (path, ast.parse(path.read_text()))
    return found


def absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports(module: str, path: Path, tree: ast.Module) -> list[tuple[ast.ImportFrom, str, bool]]:
    """(node, the module it imports from, whether it sits inside a function)."""
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            inside |= {id(n) for n in ast.walk(fn)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = absolute(node, module, path.name == "__init__.py")
            out.append((node, target, id(node) in inside))
    return out


def test_the_import_contracts_hold() -> None:
    """Floors, independent parts, aiohttp only on the wire, the emulator apart."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_import_cycle() -> None:
    graph: dict[str, set[str]] = {}
    mods = modules()
    for name, (path, tree) in mods.items():
        if name.startswith("bulkload.emulator"):
            continue
        deps = set()
        for node, target, _ in imports(name, path, tree):
            if node.module is None:  # `from . import events`: the module itself
                deps |= {f"{target}.{a.name}" for a in node.names} & set(mods)
            elif target in mods:
                deps.add(target)
        graph[name] = deps - {name}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep in graph and state.get(dep) is None:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node)


def test_no_private_names_across_modules_and_lazy_imports_only_in_faces() -> None:
    problems = []
    for name, (path, tree) in modules().items():
        if name.startswith("bulkload.emulator"):
            continue
        face = any(name == f or name.startswith(f + ".") for f in LAZY_ALLOWED - {"bulkload"})
        for node, target, local in imports(name, path, tree):
            if not target.startswith("bulkload"):
                continue
            private = [
                a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"
            ]
            if private and target != name:
                problems.append(f"{path.name}:{node.lineno} takes private {private} from {target}")
            if local and not face and name != "bulkload":
                problems.append(f"{path.name}:{node.lineno} imports {target} inside a function")
    assert not problems, "\n".join(problems)


def run_python(code: str) -> str:
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return run.stdout.strip()


def test_worker_processes_preload_a_light_module() -> None:
    """The fork server imports this before any worker runs: it must import, and must not
    pull in the network stack (a worker only validates and hashes)."""
    assert pool.PRELOAD == "bulkload._validate.worker"
    loaded = run_python(
        f"import importlib, sys; importlib.import_module({pool.PRELOAD!r}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'aiofiles', 'rich')))"
    )
    assert loaded == "[]"


def test_help_loads_neither_the_library_nor_aiohttp() -> None:
    loaded = run_python(
        "import sys, contextlib, io; from bulkload import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()): cli.main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('aiohttp', 'bulkload._load', "
        "'bulkload._net', 'rich'))))"
    )
    assert loaded == "[]"


def test_the_cli_exit_codes_are_the_library_s() -> None:
    spelled = {
        "OK": _exit.EXIT_OK, "FATAL": _exit.EXIT_FATAL, "USAGE": _exit.EXIT_USAGE,
        "REJECTS": _exit.EXIT_REJECTS, "FAILED": _exit.EXIT_FAILED,
        "SIGINT": _exit.EXIT_SIGINT, "SIGTERM": _exit.EXIT_SIGTERM,
    }  # fmt: skip
    assert spelled == {code.name: code.value for code in ExitCode}
