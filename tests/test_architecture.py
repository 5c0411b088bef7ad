"""The architecture, read from the source: layers, import cycles, module length, pure modules.

Pure ``ast``: nothing here imports the project or sets up Django, so the file runs in seconds and
a failure names the file and line to change. The rules (docs/ARCHITECTURE.md,
CONTRIBUTING.md):

1. Apps depend one way, platform (``cytoloop``) <- annotation <- training <- inference: a module
   never imports (at the top, inside a function, or under ``TYPE_CHECKING``) an app above its own.
2. No import cycle between modules, counting every import: those that run when a module is
   imported and the function-local ones too (a local import that only hides a cycle is still one).
3. A module over 500 lines (the apps', and those under bench/, scripts/ and tests/) says why in its
   docstring, on a line starting ``Long because``.
4. Pure modules (math: consensus, agreement, smoothing, augmentation, networks, losses, metrics,
   uncertainty...) import no Django, directly or through any project module they import.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# where each top-level package lives (platform/ is a source root, not a package)
SOURCE_ROOTS = {
    "cytoloop": ROOT / "platform",
    "annotation": ROOT,
    "training": ROOT,
    "inference": ROOT,
}
# lower number = lower layer; a module may import its own layer and those below it
LAYERS = {"cytoloop": 0, "annotation": 1, "training": 2, "inference": 3}

MAX_LINES = 500
LONG_REASON = re.compile(r"^\s*Long because\b", re.MULTILINE)
# other Python the line rule covers (its imports are not layered: tests and benchmarks use every app)
EXTRA_LINE_ROOTS = ("bench", "scripts", "tests")

# Pure modules: each entry names a module or a package (the package and all it holds). A module
# whose docstring says "no Django import" is held to it as well (see declared_pure).
PURE = (
    "annotation.agreement",
    "annotation.bethesda",
    "annotation.consensus",
    "annotation.crops",
    "annotation.formats",
    "annotation.geometry",
    "annotation.review_decisions",
    "annotation.simulation",
    "annotation.synthetic",
    "annotation.validation",
    "training.augment",
    "training.detection",
    "training.metrics",
    "training.networks",
    "training.smoothing",
    "training.splits",
    "inference.active_learning",
    "inference.strategies",
    "inference.uncertainty",
)
# "Pure module (...)", "(no Django import)", "(pure; no Django ...)" in the module docstring
DECLARES_PURE = re.compile(r"^Pure\b|\(no Django\b|\(pure\b", re.MULTILINE)
# third-party roots that mean "this imports Django" (or the Django-bound Celery app)
DJANGO_ROOTS = frozenset(
    {
        "django",
        "rest_framework",
        "drf_spectacular",
        "drf_spectacular_sidecar",
        "django_htmx",
        "django_celery_results",
        "template_partials",
        "environ",
        "celery",
        "kombu",
        "whitenoise",
    }
)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # the project module imported (resolved), or the third-party dotted name
    line: int
    runtime: bool  # runs when the source module is imported (not in a function, not TYPE_CHECKING)
    path: Path

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    lines: int
    imports: list[Import] = field(default_factory=list)


def _module_name(path: Path, top: str) -> tuple[str, bool]:
    rel = path.relative_to(SOURCE_ROOTS[top]).with_suffix("")
    parts = list(rel.parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _source_files(top: str) -> Iterator[Path]:
    base = SOURCE_ROOTS[top] / top
    for path in sorted(base.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for top in SOURCE_ROOTS:
        for path in _source_files(top):
            name, is_package = _module_name(path, top)
            text = path.read_text(encoding="utf-8")
            found[name] = Module(
                name, path, is_package, ast.parse(text, str(path)), len(text.splitlines())
            )
    for module in found.values():
        module.imports = list(dict.fromkeys(_imports(module, found)))  # one per name and line
    return found


def _resolve(dotted: str, known: dict[str, Module]) -> str:
    """The most specific project module a dotted name refers to (itself if third-party)."""
    if dotted.split(".")[0] not in SOURCE_ROOTS:
        return dotted
    parts = dotted.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return dotted


def _relative_base(module: Module, level: int) -> str:
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _string_imports(node: ast.Call) -> list[str]:
    """Dotted names a call imports by string: import_module("x.y"), apps.get_model("app.Model")."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if name == "import_module" and args:
        return [args[0]]
    if name == "get_model" and args:
        # get_model("annotation.Image") or get_model("annotation", "Image"): the app's models
        return [args[0].split(".")[0] + ".models"]
    return []


def _imports(module: Module, known: dict[str, Module]) -> Iterator[Import]:
    def visit(node: ast.AST, runtime: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            child_runtime = runtime
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                child_runtime = False
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from imports_of(stmt, False)
                    yield from visit(stmt, False)
                for stmt in child.orelse:
                    yield from imports_of(stmt, runtime)
                    yield from visit(stmt, runtime)
                continue
            yield from imports_of(child, runtime)
            yield from visit(child, child_runtime)

    def made(target: str, line: int, runtime: bool) -> Import:
        return Import(module.name, _resolve(target, known), line, runtime, module.path)

    def imports_of(node: ast.AST, runtime: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield made(alias.name, node.lineno, runtime)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = _relative_base(module, node.level)
                base = f"{prefix}.{base}" if base else prefix
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield made(candidate if candidate in known else base, node.lineno, runtime)
        elif isinstance(node, ast.Call):
            for dotted in _string_imports(node):
                # a string import runs when the call does: never counted for cycles
                yield made(dotted, node.lineno, False)

    yield from visit(module.tree, True)


def _top(name: str) -> str:
    return name.split(".")[0]


def _project_imports(module: Module, *, runtime_only: bool) -> list[Import]:
    known = modules()
    return [
        imp
        for imp in module.imports
        if imp.target in known and imp.target != module.name and (imp.runtime or not runtime_only)
    ]


def test_imports_are_read_at_every_depth_and_resolved_to_modules():
    source = (
        "from inference import services\n"
        "def f():\n    import training.models\n"
        "if TYPE_CHECKING:\n    from . import helpers\n"
        "class C:\n    from training.models import TrainingRun\n"
        "apps.get_model('inference.PredictionJob')\n"
    )
    names = (
        "annotation",
        "annotation.views",
        "inference",
        "inference.services",
        "inference.models",
        "training",
        "training.models",
    )
    known = {name: None for name in names}
    module = Module(
        "annotation.views", ROOT / "annotation" / "views.py", False, ast.parse(source), 7
    )
    found = {(imp.target, imp.line, imp.runtime) for imp in _imports(module, known)}
    assert found == {
        ("inference.services", 1, True),
        ("training.models", 3, False),  # function-local
        ("annotation", 5, False),  # TYPE_CHECKING; annotation.helpers is no module here
        ("training.models", 7, True),  # a class body runs at import
        ("inference.models", 8, False),  # by string
    }


# --- 1. layers -------------------------------------------------------------------------------


def layer_violations() -> list[str]:
    found = []
    for module in modules().values():
        own = LAYERS[_top(module.name)]
        for imp in module.imports:
            above = LAYERS.get(_top(imp.target))
            if above is not None and above > own:
                found.append(
                    f"{imp.where()}: {module.name} imports {imp.target} "
                    f"({_top(module.name)} may not import {_top(imp.target)})"
                )
    return sorted(found)


def test_no_app_imports_an_app_above_it():
    found = layer_violations()
    assert not found, (
        "Apps depend one way, cytoloop <- annotation <- training <- inference; "
        f"{len(found)} import(s) run back up:\n" + "\n".join(found)
    )


# --- 2. cycles -------------------------------------------------------------------------------


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), those with a cycle only."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        cycles.append(sorted(component))
    return sorted(cycles)


def import_cycles(*, runtime_only: bool) -> list[str]:
    known = modules()
    graph = {
        name: {imp.target for imp in _project_imports(m, runtime_only=runtime_only)}
        for name, m in known.items()
    }
    reports = []
    for component in strongly_connected(graph):
        members = set(component)
        edges = [
            f"    {imp.where()}: {imp.source} -> {imp.target}"
            for name in component
            for imp in _project_imports(known[name], runtime_only=runtime_only)
            if imp.target in members
        ]
        reports.append(f"cycle of {len(component)}: {', '.join(component)}\n" + "\n".join(edges))
    return reports


def test_the_strongly_connected_components_are_the_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert strongly_connected(graph) == [["a", "b", "c"], ["e"]]


def test_no_import_cycle_between_modules():
    found = import_cycles(runtime_only=False)
    assert not found, (
        "Modules that import each other (function-local imports included):\n" + "\n".join(found)
    )


# --- 3. length -------------------------------------------------------------------------------


def line_checked_paths() -> list[Path]:
    """The app modules (migrations aside) and every Python file under EXTRA_LINE_ROOTS."""
    paths = [m.path for m in modules().values() if "migrations" not in m.path.parts]
    for extra in EXTRA_LINE_ROOTS:
        paths += sorted((ROOT / extra).rglob("*.py"))
    return sorted(set(paths))


def long_modules_without_reason() -> list[str]:
    found = []
    for path in line_checked_paths():
        text = path.read_text(encoding="utf-8")
        lines = len(text.splitlines())
        if lines <= MAX_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not LONG_REASON.search(docstring):
            found.append(f"{path.relative_to(ROOT)}: {lines} lines")
    return found


def test_the_length_rule_reads_the_tests_too():
    checked = line_checked_paths()
    assert Path(__file__).resolve() in checked
    assert ROOT / "tests" / "annotation" / "formats" / "conftest.py" in checked


def test_no_module_over_500_lines_without_a_reason_at_its_top():
    found = long_modules_without_reason()
    assert not found, (
        f"Over {MAX_LINES} lines with no 'Long because ...' line in the module docstring "
        "(split it, or say why it is one module):\n" + "\n".join(found)
    )


# --- 4. pure modules -------------------------------------------------------------------------


def declared_pure() -> set[str]:
    """Modules named in PURE (or inside a package named there), and those that say they are."""
    known = modules()
    pure = {name for name in known if any(name == p or name.startswith(p + ".") for p in PURE)}
    for name, module in known.items():
        if DECLARES_PURE.search(ast.get_docstring(module.tree) or ""):
            pure.add(name)
    return pure


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def django_chain(name: str) -> list[str] | None:
    """How importing `name` (its parent packages, and every module it imports, function-local
    included) reaches Django: ["a.b", "a.c", "django.db"], or None if it never does."""
    known = modules()
    seen = {name}
    queue: list[list[str]] = [[name]]
    while queue:
        chain = queue.pop(0)
        module = known[chain[-1]]
        for imp in module.imports:
            if _top(imp.target) in DJANGO_ROOTS:
                return [*chain, f"{imp.target} ({imp.where()})"]
        nexts = [imp.target for imp in module.imports if imp.target in known]
        nexts += [parent for parent in _parents(module.name) if parent in known]
        for target in nexts:
            if target not in seen:
                seen.add(target)
                queue.append([*chain, target])
    return None


def test_every_listed_pure_module_exists():
    known = modules()
    missing = [p for p in PURE if not any(n == p or n.startswith(p + ".") for n in known)]
    assert not missing, f"PURE names modules that are gone (update the list): {missing}"


def test_pure_modules_import_no_django():
    found = []
    for name in sorted(declared_pure()):
        chain = django_chain(name)
        if chain:
            found.append(f"{name}: " + " -> ".join(chain))
    assert not found, "Pure modules that reach Django:\n" + "\n".join(found)
