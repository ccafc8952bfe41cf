"""The package's layout: who imports whom. No import circle (at module level or inside functions), and only the
command layer (:mod:`cnx2lite.commands`) speaks argparse."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cnx2lite"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the cnx2lite modules it imports anywhere in its code (``from .x import y`` counts ``x``, or ``x.y``
    when that is a module)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names if alias.name.startswith("cnx2lite")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                if not target.startswith("cnx2lite"):
                    continue
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_circle():
    graph = imports()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circle = path[path.index(target):] + [target] if target in path else [module, target]
                raise AssertionError("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_only_the_command_layer_parses_arguments():
    speaking = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if "argparse" in {
        alias.name for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.Import)
        for alias in node.names})
    assert all(m == "cnx2lite.commands" or m.startswith("cnx2lite.commands.") for m in speaking), speaking


def test_no_library_file_over_350_lines():
    """One job per module: a file that grows past 350 lines is doing two."""
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 350}
    assert not long, long


# Layers, lowest first: a module imports only from its own layer or below (the package root, which only re-exports
# the public API, is exempt). Building blocks; data, runs and weights; loading and measuring; training; the tools
# that train and report; the notebooks' helpers; the command line.
LAYERS = (
    {"allocator", "amp", "openmp", "writing", "masking", "bootstrap", "images", "image_files", "transforms", "layers",
     "sparse", "models", "torch_files", "arguments"},
    {"data", "rundir", "hub", "checkpoint_formats", "fcmae", "dense"},
    {"imagenette", "image_cache", "checkpoints", "report_folder"},
    {"factory", "collapse"},
    {"probes", "collapse_curves", "collapse_along_training", "export"},
    {"train"},
    {"reproduce", "demo", "bench"},
    {"notebook"},
    {"commands", "__main__"},
)


def test_no_import_reaches_a_higher_layer():
    def layer(module: str) -> int:
        top = module.removeprefix("cnx2lite").removeprefix(".").split(".")[0]
        found = [i for i, names in enumerate(LAYERS) if top in names]
        assert found, f"{module} is in no layer of LAYERS: place it"
        return found[0]

    upward = [f"{a} -> {b}" for a, targets in imports().items() if a != "cnx2lite" for b in targets
              if b != "cnx2lite" and layer(b) > layer(a)]
    assert not upward, upward
