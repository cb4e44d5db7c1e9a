"""The package's architecture holds: no import cycle, and the library never reaches into the world."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "minigrpo"
# The stages that may use the embedded world: the command line registers its sub-commands, and
# eval / report load the world's judge only for world prompts (inside a function, never at import).
MAY_USE_WORLD = {"minigrpo.cli"}
LAZY_WORLD = {"minigrpo.evaluate", "minigrpo.report"}


def module_name(path):
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path, top_level_only=False):
    """The minigrpo modules a file imports (`from minigrpo.x import y` counts y when it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("minigrpo")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("minigrpo"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


FILES = sorted(PKG.rglob("*.py"))
MODULES = {module_name(p): p for p in FILES}


def test_no_import_cycle():
    """The import graph of minigrpo/ (every import, lazy ones too) has no cycle."""
    graph = {m: {i for i in imports(p) if i in MODULES and not m.startswith(i + ".") and i != m}
             for m, p in MODULES.items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for n in sorted(graph[m]):
            assert state.get(n) != "open", f"import cycle: {' → '.join(stack + [m, n])}"
            if n not in state:
                visit(n, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_library_never_imports_the_world():
    """Core modules import nothing from minigrpo.world; eval and report only inside functions."""
    for m, p in MODULES.items():
        if m.startswith("minigrpo.world") or m in MAY_USE_WORLD:
            continue
        found = imports(p, top_level_only=m in LAZY_WORLD)
        world = sorted(i for i in found if i.startswith("minigrpo.world"))
        assert not world, f"{p.relative_to(PKG.parent)} imports {world}{' at module level' if m in LAZY_WORLD else ''}"
