"""The package's shape, checked statically: layers point down only, no import cycles, no module
uses another module's private names, no family-name branches outside the families, files stay
small. These read the source with `ast`; nothing is imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dlcli"

# Each layer may import itself and the layers listed after it, never those before it.
LAYERS = [
    ("cli", "serve"),
    ("tune",),  # dl tune: searches over the families' one train job
    ("families", "runtime"),  # runtime: exported graphs on onnxruntime, never torch
    ("engine",),
    ("model", "data", "export"),
    ("spec",),
    ("base",),  # errors, console, settings, fileio, accel, modelfile, metrics, report, ...
]
NOT_BELOW = {  # within one layer row, packages that still must not import each other
    "runtime": {"families"},
    "families": {"runtime"},
    "model": {"engine", "families", "cli", "export"},
    "export": {"engine", "families", "cli"},
    "data": {"engine", "families", "cli", "model", "export"},
}
# Documented exceptions: (importer, imported) -> why it is not an upward dependency.
ALLOWED = {
    ("dlcli.spec.schema", "dlcli.data.kinds"): "a spec's `data:` names a registered kind; "
    "data/kinds.py is a leaf table of names (imports only dlcli.errors, no kind module)",
}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import in the file, at any depth
    (imports inside functions count: a lazy import is still an arrow; `if TYPE_CHECKING:` blocks do
    not, they never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # `if TYPE_CHECKING:` imports are for type checkers only
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    found = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.append((base, [a.name for a in node.names], node.lineno))
    return [f for f in found if f[0] == "dlcli" or f[0].startswith("dlcli.")]


def resolve(target: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The dlcli modules an import statement reaches (`from dlcli.x import y` may name a module y)."""
    out = []
    for n in names:
        if f"{target}.{n}" in known:
            out.append(f"{target}.{n}")
    if not out or len(out) < len(names):
        mod = target
        while mod not in known and "." in mod:
            mod = mod.rpartition(".")[0]
        out.append(mod)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for name, path in known.items():
        for target, names, _ in imports_of(name, path):
            for dep in resolve(target, names, known):
                if dep != name and dep in known and not name.startswith(dep + "."):
                    edges[name].add(dep)
    return edges


def layer_of(module: str) -> tuple[int, str]:
    parts = module.split(".")
    if module == "dlcli.__main__":
        return 0, "cli"
    pkg = parts[1] if len(parts) > 2 or (len(parts) == 2 and _is_pkg(parts[1])) else "base"
    for i, row in enumerate(LAYERS):
        if pkg in row:
            return i, pkg
    return len(LAYERS) - 1, "base"


def _is_pkg(part: str) -> bool:
    return (PACKAGE / part).is_dir()


def test_no_import_cycles() -> None:
    edges = graph()
    # strongly connected components (Tarjan); any component with more than one module is a cycle
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert comps == [], f"import cycles: {comps}"


def test_layers_point_down_only() -> None:
    bad = []
    for name, deps in graph().items():
        level, pkg = layer_of(name)
        for dep in deps:
            dep_level, dep_pkg = layer_of(dep)
            upward = dep_level < level or dep_pkg in NOT_BELOW.get(pkg, set())
            if upward and (name, dep) not in ALLOWED:
                bad.append(f"{name} -> {dep}")
    assert bad == [], "imports that point up:\n" + "\n".join(sorted(bad))


def test_the_spec_reads_kind_names_without_importing_any_kind() -> None:
    """The one exception above stays a table of names: checking a spec's `data:` imports no data
    kind module and no data contract."""
    code = (
        "import sys; from dlcli.spec.schema import parse_spec; "
        "parse_spec({'layers': ['relu'], 'data': ['tabular', 'image']}, 'x'); "
        "print(sorted(m for m in sys.modules if m.startswith('dlcli.data.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['dlcli.data.kinds']"


def test_the_runtime_never_imports_torch() -> None:
    """dlcli/runtime/ runs exported graphs where torch is not installed: none of its modules, nor
    anything they import, loads torch."""
    names = sorted(m for m in modules() if m.startswith("dlcli.runtime"))
    code = f"import sys; import {', '.join(names)}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_imports_another_modules_private_names() -> None:
    known = modules()
    bad = []
    for name, path in known.items():
        for target, names, line in imports_of(name, path):
            for n in names:
                if n.startswith("_") and not n.startswith("__") and target != name:
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target}.{n}")
    assert bad == [], "private names used across modules:\n" + "\n".join(bad)


def test_no_family_name_branches_in_cli_or_export() -> None:
    hits = [
        f"{p.relative_to(PACKAGE.parent)}:{i}"
        for sub in ("cli", "export")
        for p in (PACKAGE / sub).rglob("*.py")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if '"supervised"' in line or "'supervised'" in line
    ]
    assert hits == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: p.name)
def test_product_files_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)}: {lines} lines"
