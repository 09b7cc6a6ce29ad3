"""The package's shape, checked: small rooms, and one place that knows which backend a store runs on."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "remote_store_dagster"
MAX_FUNCTION_LINES = 80
MAX_CLASS_LINES = 250
MAX_IO_MANAGER_LINES = 200


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _too_long() -> list[str]:
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
                if node.name == "RemoteStoreIOManager":
                    limit = MAX_IO_MANAGER_LINES
                if lines > limit:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {lines} > {limit}")
    return found


def test_no_function_or_class_is_too_long_to_read() -> None:
    assert _too_long() == []


def test_only_the_storage_factory_asks_which_backend_a_store_runs_on() -> None:
    """``storage_for`` picks the implementation; everything else talks to ``Storage``."""
    asks = re.compile(r"backend_kind\(|S3_PYARROW|[\"']s3-pyarrow[\"']|is_s3_pyarrow|\.name ==")
    allowed = {
        PACKAGE / "_storage" / "__init__.py",  # the factory
        PACKAGE / "_remote_store_adapter.py",  # defines the names it answers with
        PACKAGE / "_storage" / "_s3.py",  # names its own kind
        PACKAGE / "resources.py",  # S3PyArrowResource builds an s3-pyarrow backend spec
    }
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}"
        for path in _sources()
        if path not in allowed
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if asks.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []


def test_remote_store_internals_are_read_in_one_adapter_module() -> None:
    """Private names of remote-store (``_registry``, ``store._backend``, ``store._root``) stay in the adapter."""
    private = re.compile(r"remote_store import _|\._backend\b|\._root\b|_BACKEND_FACTORIES|\._pa_fs_instance")
    offenders = [
        str(path.relative_to(PACKAGE.parent))
        for path in _sources()
        if path.name != "_remote_store_adapter.py" and private.search(path.read_text())
    ]
    assert offenders == []
