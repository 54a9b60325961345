"""The package's layout: dependencies run one way, with no cycles.

foundations <- solvers | learned <- adapters <- analyses <- figures <- the top-level modules
(explorer/__init__, models, plugins, __main__) <- app pages and notebooks. Every import counts,
including those inside functions (a lazy import that runs upward is still an upward dependency).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "explorer"

# Rank of each layer: a module may import modules of a lower rank, or of its own subpackage.
RANKS = {"foundations": 0, "solvers": 1, "learned": 1, "adapters": 2, "analyses": 3, "figures": 4,
         "gallery": 6}  # the gallery's cards use the whole package, as a user would: above the top
TOP = 5  # explorer/__init__.py, __main__.py, models.py, plugins.py
SHARED = {"chart", "controls", "precomputed", "serve"}  # app_pages modules that are not pages: what pages share


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of `known` that the file imports, anywhere in it (resolved like Python does)."""
    is_package = path.name == "__init__.py"
    package = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif target in known:
                    found.add(target)
    found.discard(name)
    return found


def rank(name: str) -> tuple[int, str]:
    parts = name.split(".")
    if len(parts) >= 2 and parts[1] in RANKS:
        return RANKS[parts[1]], parts[1]
    return TOP, "explorer"


def graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    mods = modules(package)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def upward(g: dict[str, set[str]]) -> list[str]:
    """Edges that break the layering: to a higher layer, or to a sibling layer of the same rank."""
    bad = []
    for a, targets in g.items():
        ra, la = rank(a)
        for b in targets:
            rb, lb = rank(b)
            if la == lb:
                continue
            if rb >= ra:
                bad.append(f"{a} imports {b} ({lb} is not below {la})")
    return sorted(bad)


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of g (one per strongly connected component of more than one module)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_every_module_sits_in_a_layer():
    loose = [n for n in modules() if rank(n)[0] == TOP and n not in
             ("explorer", "explorer.__main__", "explorer.models", "explorer.plugins")]
    assert not loose, f"modules outside the subpackages (put each in foundations/, solvers/, ...): {loose}"


def test_dependencies_run_one_way():
    assert upward(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_each_subpackage_says_what_lives_there_and_what_it_imports():
    for layer in RANKS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"explorer/{layer}/__init__.py: docstring must say what it may import"


def test_pages_import_the_core_and_the_shared_controls_but_not_each_other():
    pages = ROOT / "app_pages"
    names = {p.stem for p in pages.glob("*.py")}
    for path in pages.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "app_pages":
                others = {a.name for a in node.names} & names - SHARED
                assert not others, f"{path.name} imports page(s) {others}: shared code belongs in controls.py (figures: chart.py)"
    core = {n: p for n, p in modules().items()}
    for name, path in core.items():
        text = path.read_text()
        assert "app_pages" not in {getattr(n, "module", None) for n in ast.walk(ast.parse(text))}, name


# The checks above must fail on the faults they guard against.


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / "explorer" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [tmp_path / "explorer", *[p for p in (tmp_path / "explorer").rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return tmp_path / "explorer"


def test_a_lazy_upward_import_is_caught(tmp_path):
    pkg = _package(tmp_path, {
        "foundations/schedules.py": "def get():\n    from ..analyses import metrics\n",
        "analyses/metrics.py": "from ..foundations.schedules import get\n",
    })
    g = graph(pkg)
    assert g["explorer.foundations.schedules"] == {"explorer.analyses.metrics"}
    assert upward(g) == ["explorer.foundations.schedules imports explorer.analyses.metrics "
                         "(analyses is not below foundations)"]
    assert cycles(g) == [["explorer.analyses.metrics", "explorer.foundations.schedules"]]


def test_a_cycle_inside_one_layer_and_a_sibling_import_are_caught(tmp_path):
    pkg = _package(tmp_path, {
        "foundations/a.py": "from . import b\n",
        "foundations/b.py": "def f():\n    from .a import x\n",
        "learned/net.py": "from ..solvers import basic\n",
        "solvers/basic.py": "import numpy\n",
    })
    g = graph(pkg)
    assert cycles(g) == [["explorer.foundations.a", "explorer.foundations.b"]]
    assert upward(g) == ["explorer.learned.net imports explorer.solvers.basic (solvers is not below learned)"]


@pytest.mark.parametrize("line, target", [
    ("from explorer.analyses.metrics import f", "explorer.analyses.metrics"),
    ("import explorer.analyses.metrics", "explorer.analyses.metrics"),
    ("from ..analyses import metrics as M", "explorer.analyses.metrics"),
    ("from .. import analyses", "explorer.analyses"),
])
def test_every_import_form_is_resolved(tmp_path, line, target):
    pkg = _package(tmp_path, {"foundations/x.py": line + "\n", "analyses/metrics.py": ""})
    assert target in graph(pkg)["explorer.foundations.x"]


def test_import_explorer_stays_light():
    """`import explorer` (every page, notebook and worker pays it) leaves the heavy libraries to first use:
    scipy's integrators, optimisers and special functions take 0.2-0.9 s each to import on 2 cores, torch and
    diffusers seconds. (The UI libraries have their own check: test_core_metrics.test_core_imports_no_ui_library.)"""
    import subprocess
    import sys

    heavy = ("scipy.integrate", "scipy.optimize", "scipy.special", "torch", "pandas", "dask", "ot", "diffusers")
    code = f"import sys, explorer; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"import explorer imported {done.stdout.strip()}: import them where first used"
