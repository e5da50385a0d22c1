"""avits_core is plain Python: importing every module of it never imports Prefect, no module of it
refers to the Prefect wiring (flows, tasks) or the CLI, and library code never prints."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_avits_core_never_imports_prefect():
    code = (
        "import importlib, pkgutil, sys, avits_core\n"
        "for m in pkgutil.walk_packages(avits_core.__path__, 'avits_core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = sorted(k for k in sys.modules if k == 'prefect' or k.startswith('prefect.'))\n"
        "print(len(bad)); assert not bad, bad[:5]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_library_code_never_prints():
    offenders = []
    for path in (REPO / "avits_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_avits_core_does_not_reach_up_into_flows_tasks_or_cli():
    offenders = []
    for path in (REPO / "avits_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in ("flows", "tasks", "prefect", "avits"):
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {n}")
    assert not offenders, offenders
