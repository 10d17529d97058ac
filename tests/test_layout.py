"""The package's shape, which the layout depends on: no import cycle, and the modules that
build a command line (`submit`, `run --dry-run`) load neither torch nor Ray."""

import ast
import subprocess
import sys

from .conftest import ROOT

PKG = ROOT / "archive_colorize"


def _graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (function-level imports too)."""
    mods = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PKG.rglob("*.py")}
    graph = {}
    for f in PKG.rglob("*.py"):
        me = ".".join(f.relative_to(ROOT).with_suffix("").parts)
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("archive_colorize")
            ):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[me] = deps & mods - {me}
    return graph


def test_no_import_cycle():
    graph, cycles = _graph(), []

    def visit(node, path):
        for dep in graph[node]:
            if dep in path:
                cycles.append(path[path.index(dep) :] + [dep])
            elif len(path) < 12:
                visit(dep, path + [dep])

    for start in graph:
        visit(start, [start])
    assert cycles == []


def test_layer_contracts_hold():
    """pyproject.toml's import-linter contracts: the layers, no torch in what checks and plans
    a run, Ray only where a job is wired."""
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, no_cache=True))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in r.stdout


def test_no_module_left_in_the_package_root():
    """Every module lives in the sub-package of its job (CONTRIBUTING.md); the root holds
    only the public API and the errors everything shares."""
    assert sorted(p.name for p in PKG.glob("*.py")) == ["__init__.py", "errors.py"]


def test_options_and_checks_load_neither_torch_nor_ray():
    code = (
        "import sys, archive_colorize.run.options, archive_colorize.sources.manifest, archive_colorize.model.weights_header, "
        "archive_colorize.run.jobs; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_pipeline_is_orchestration_only():
    src = (PKG / "run" / "pipeline.py").read_text()
    names = {n.name for n in ast.parse(src).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not names & {"prepare", "finish", "Colorizer", "select", "OutputLock", "ProgressWriter"}


def test_submit_dry_run_on_a_directory_manifest_loads_neither_torch_nor_ray(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "batch-01"
    for box in (1, 2):
        (d / f"box={box}").mkdir(parents=True)
        pq.write_table(
            pa.table({"id": [f"b{box}-a", f"b{box}-b"], "uri": ["a.jpg", "b.jpg"]}),
            d / f"box={box}" / "part-0.parquet",
        )
    code = (
        "import sys; from typer.testing import CliRunner; from archive_colorize.apps.cli import app; "
        f"r = CliRunner().invoke(app, ['submit', {str(d)!r}, '--address', 'http://nowhere:8265', '--dry-run']); "
        "print(r.exit_code); print(r.output.strip()); print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.stdout.splitlines() == ["0", f"{d}: would submit 4 of 4 rows into {d}-out", "[]"], (
        r.stdout + r.stderr
    )


def test_the_public_api_resolves_without_loading_torch_up_front():
    code = (
        "import sys, archive_colorize as ac; before = 'torch' in sys.modules; "
        "missing = [n for n in ac.__all__ if not hasattr(ac, n)]; print(before, missing, 'torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "False [] True", r.stdout + r.stderr


def test_ruff_finds_nothing_and_the_formatter_changes_nothing():
    """The style rules of pyproject.toml [tool.ruff]: lint (pyflakes, pycodestyle, line
    length) and format, over the package, tests, benchmarks and scripts."""
    from ruff.__main__ import find_ruff_bin

    ruff = find_ruff_bin()
    lint = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run(
        [ruff, "format", "--check", "--no-cache", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_benchmarks_take_public_names_from_the_public_api_and_every_import_resolves():
    """A benchmark measures what a user calls: the names in archive_colorize.__all__ come
    from the package itself. Kernel benchmarks that time internals against an earlier
    version may import those internals, but every import must still resolve (one imported
    a module the layout had moved)."""
    import importlib.util

    import archive_colorize

    public = set(archive_colorize.__all__)
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("archive_colorize")
            ):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                where = f"{path.name}:{node.lineno} {node.module}.{alias.name}"
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                ), where
                assert node.module == "archive_colorize" or alias.name not in public, (
                    f"{where}: public, import it from archive_colorize"
                )


def test_each_test_file_makes_its_own_s3_buckets():
    # One moto server serves the whole session: two files making the same bucket pass alone and
    # fail in CI's order with a bare FileExistsError (it happened: "archive" in two files).
    import re
    from collections import defaultdict

    makers = defaultdict(set)
    for path in (ROOT / "tests").rglob("test_*.py"):
        for bucket in re.findall(r"""\b(?:s3|fs)\.mkdir\(\s*["']([^"'/]+)["']""", path.read_text()):
            makers[bucket].add(path.relative_to(ROOT).as_posix())
    assert makers, "the pattern no longer finds the tests' buckets"
    shared = {b: sorted(files) for b, files in makers.items() if len(files) > 1}
    assert not shared, shared
