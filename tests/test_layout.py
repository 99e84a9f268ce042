"""The layout's rules, checked: wings import one way, nobody reaches into another module's private names,
every path the README names exists, long functions say why they are long, and the README's measured
tables are the ones the results files give (benchmarks/readme_tables.py regenerates them).
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "hyperclone"

# which wings each wing may import (besides itself)
ALLOWED = {
    "common": set(),
    "grow": {"common"},
    "train": {"common"},
    "baselines": {"common", "grow", "train"},
    "experiments": {"common", "grow", "train", "baselines"},
    "cli": {"common", "grow", "train", "baselines", "experiments"},
}
MAX_FUNCTION_LINES = 60


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def wing_of(parts: tuple[str, ...]) -> str | None:
    return parts[0] if len(parts) > 1 else None  # top-level files (__init__) belong to no wing


def imported(tree: ast.AST) -> list[tuple[str, list[str], int]]:
    """(module, names, line) for every import of a hyperclone module, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hyperclone"):
            found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("hyperclone")]
    return found


def test_every_module_lives_in_a_wing():
    loose = [parts for _, parts in modules() if len(parts) == 1 and parts[0] != "__init__"]
    assert not loose, f"modules outside the wings: {loose}"
    assert {parts[0] for _, parts in modules() if len(parts) > 1} == set(ALLOWED)


def test_imports_run_one_way():
    bad = []
    for path, parts in modules():
        wing = wing_of(parts)
        if wing is None:
            continue
        for module, names, line in imported(ast.parse(path.read_text())):
            target = module.split(".")
            if len(target) == 1:  # `from hyperclone import __version__`
                if any(n != "__version__" for n in names):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {names} from the package root")
                continue
            other = target[1]
            if other != wing and other not in ALLOWED[wing]:
                bad.append(f"{path.relative_to(ROOT)}:{line} ({wing}) imports {module} ({other})")
    assert not bad, "\n".join(bad)


def test_no_module_uses_another_modules_private_names():
    bad = []
    for path, _ in modules():
        tree = ast.parse(path.read_text())
        aliases = set()
        for module, names, line in imported(tree):
            bad += [f"{path.relative_to(ROOT)}:{line} imports {n} from {module}" for n in names
                    if n.startswith("_") and n != "__version__"]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hyperclone"):
                aliases |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("hyperclone")}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not bad, "\n".join(bad)


def import_graph() -> dict[str, set[str]]:
    """hyperclone module -> the hyperclone modules it imports (at any depth, lazy imports included)."""
    names = {".".join(("hyperclone", *parts)).removesuffix(".__init__") for _, parts in modules()}
    graph: dict[str, set[str]] = {}
    for path, parts in modules():
        edges = set()
        for module, imported_names, _ in imported(ast.parse(path.read_text())):
            found = {f"{module}.{n}" for n in imported_names if f"{module}.{n}" in names}
            edges |= found or ({module} if module in names else set())
        graph[".".join(("hyperclone", *parts)).removesuffix(".__init__")] = edges
    return graph


def test_no_import_circle():
    """No module reaches itself through its imports (lazy ones too): every package reads in one direction."""
    graph, circles = import_graph(), []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "\n".join(circles)


def test_the_training_loop_is_short_and_never_asks_for_the_strategy():
    """train/loop.py reads the same for one process and many: the strategy object (train/parallel.py) owns
    what differs, so the loop never compares the strategy's name."""
    source = (PACKAGE / "train" / "loop.py").read_text()
    assert len(source.splitlines()) <= 350
    assert not re.search(r"strategy\s*[!=]=|[!=]=\s*['\"](fsdp|ddp)['\"]", source)


def test_the_studies_arithmetic_is_pure():
    """experiments/curve_math.py, the arithmetic every study shares, imports only the standard library's number
    modules and touches no file: the studies read runs and write pages around it."""
    source = (PACKAGE / "experiments" / "curve_math.py").read_text()
    tree = ast.parse(source)
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules <= {"__future__", "math", "statistics", "collections.abc", "typing"}, modules
    assert not re.search(r"\bopen\(|read_text|write_text|Path\b", source)


def test_train_wing_never_imports_the_growth_engine_at_run_time():
    """A fresh interpreter that imports the training loop has loaded no growth module."""
    code = ("import sys, hyperclone.train.loop, hyperclone.train.data, hyperclone.train.moments; "
            "print(sorted(m for m in sys.modules if m.startswith('hyperclone.grow')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_long_functions_say_why():
    """No function body over about 60 lines (the signature and docstring not counted: CLI verbs list their
    options as parameters) unless its docstring says why it is long (the word 'long')."""
    bad = []
    for path, _ in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                if not body:
                    continue
                length = node.end_lineno - body[0].lineno + 1
                doc = ast.get_docstring(node) or ""
                if length > MAX_FUNCTION_LINES and "long" not in doc.lower():
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not bad, "\n".join(bad)


def readme_paths() -> list[str]:
    """Paths named in README.md and docs/*.md."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    candidates = set(re.findall(r"`((?:hyperclone|tests|benchmarks|results|sweeps|docs)/[\w./\-*]+)`", text))
    candidates |= set(re.findall(r"\b((?:results|sweeps|benchmarks)/[\w.\-/]+\.(?:json|md|yaml|py|png|sh))", text))
    return sorted(candidates)


@pytest.mark.parametrize("path", readme_paths())
def test_every_path_the_readme_names_exists(path):
    matches = list(ROOT.glob(path)) if "*" in path else [ROOT / path.rstrip("/")]
    assert matches and all(m.exists() for m in matches), path


def test_the_readme_is_short_and_links_only_existing_docs():
    """README.md stays a page a newcomer reads (<= 250 lines); the details live in docs/, every page it links
    exists."""
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\((docs/[\w.\-]+\.md)(?:#[\w\-]+)?\)", text)
    assert links and all((ROOT / link).is_file() for link in links), links


def test_readme_tables_match_the_results_files():
    """Every table between <!-- table: NAME --> markers is what benchmarks/readme_tables.py makes from the
    committed results files (run it without --check to rewrite them)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "readme_tables.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("verb", ["grow", "verify", "inspect", "convert", "train", "tokenize", "experiment"])
def test_help_does_not_import_torch(verb):
    """--help answers without importing torch (about 2-3 s on this machine): the CLI reads its choices from
    torch-free modules (grow/options.py, train/options.py) and imports the work only when it runs."""
    code = ("import sys\nfrom hyperclone.cli import app\n"
            f"try:\n    app(['{verb}', '--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                                           if not p.name.startswith("_")))
def test_every_benchmark_imports_and_has_help(script):
    """Benchmarks are not run by the suite, so a moved function would break them silently: each must at least
    import everything it names and print its --help (modules named _*.py are helpers the scripts import)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "usage" in done.stdout.lower(), done.stderr[-1000:]
