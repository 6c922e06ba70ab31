"""Imports flow one way, toward include/: include imports none of the components, and no
component imports another (the README's layout paragraph), with one exception on purpose: a DAG
task may import a job's entry function (``from jobs.<job>.job import <name>``) inside its body,
so that the task runs the job while parsing the DAG file still imports nothing of ``jobs/``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("dags", "jobs", "api", "generator")
ENTRY_MODULE = re.compile(r"jobs\.[a-z_]+\.job")


def _task_body_entry_imports(tree: ast.Module) -> set[int]:
    """The ``from jobs.<job>.job import ...`` statements inside a function's body."""
    allowed: set[int] = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(function):
                if (
                    isinstance(node, ast.ImportFrom)
                    and node.level == 0
                    and node.module is not None
                    and ENTRY_MODULE.fullmatch(node.module)
                ):
                    allowed.add(id(node))
    return allowed


def offending_imports(source: str, package: str) -> list[str]:
    """The imports in ``source`` (a module of ``package``) that break the layering."""
    tree = ast.parse(source)
    forbidden = set(COMPONENTS) - {package}
    allowed = _task_body_entry_imports(tree) if package == "dags" else set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        else:
            continue
        if id(node) not in allowed:
            found += [m for m in modules if m.split(".")[0] in forbidden]
    return found


@pytest.mark.parametrize("package", ["include", *COMPONENTS])
def test_imports_flow_toward_include(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): offending_imports(path.read_text(encoding="utf-8"), package)
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


ALLOWED = "def task():\n    from jobs.load.job import load\n    return load()\n"
REFUSED = {
    "at module level": "from jobs.load.job import load\n",
    "a module that is not an entry": "def task():\n    from jobs.load.loader import stage\n",
    "the whole module": "def task():\n    import jobs.load.job\n",
    "from another component": "def task():\n    from api.app import create_app\n",
}


def test_a_dag_task_may_import_a_job_entry_function_in_its_body() -> None:
    assert offending_imports(ALLOWED, "dags") == []


@pytest.mark.parametrize("source", REFUSED.values(), ids=REFUSED.keys())
def test_a_dag_may_import_nothing_else_of_the_components(source: str) -> None:
    assert offending_imports(source, "dags") != []


def test_only_dags_have_the_exception() -> None:
    assert offending_imports(ALLOWED, "api") == ["jobs.load.job"]
