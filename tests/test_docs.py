"""The documentation site cannot rot: it builds with ``--strict`` and its Python snippets run.

Every fenced ``python`` block in ``docs/`` and ``README.md`` is executed against SeaweedFS: the
blocks of one page run in order in one namespace (a later block may use what an earlier one
defined), with the ``RS_S3_*`` variables the snippets use pointing at a fresh bucket. A block fenced
``python {test="skip"}`` is not run; ``SKIPPED`` lists them, so adding one is a visible decision.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from dagster import Definitions

if TYPE_CHECKING:
    from remote_store_dagster.testing import S3Server

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Raised messages that never reach a user (internal invariants, standard file semantics).
INTERNAL_ERRORS = {
    "unreachable",
    "I/O operation on closed file",
    "asset key has no path components",
    "stores have no multipart uploads",  # the cleanup sensor never aborts uploads where none are listed
}

#: Blocks that cannot run here, per page, and why (the test fails when this drifts).
SKIPPED = {
    "getting-started.md": 1,  # reads the data of a running ./scripts/dev (tests/test_e2e_dev.py runs it)
    "operations/reading.md": 2,  # DuckDB's httpfs extension is downloaded at run time; Spark is not installed
    # Fragments (one sensor or asset out of a Definitions, a head-object on a bucket of yours): the behaviour
    # they show is tested end to end in tests/test_cleanup_provenance.py, test_publish.py and test_loading.py.
    "cleanup-sensor.md": 2,
    "io-manager/layout.md": 3,
    "io-manager/partitions.md": 1,
}

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the first code line
    info: str
    code: str

    @property
    def skipped(self) -> bool:
        return 'test="skip"' in self.info

    @property
    def is_python(self) -> bool:
        words = self.info.strip().split()
        return bool(words) and words[0] in ("python", "py")


def blocks(path: Path, root: Path = DOCS) -> list[Block]:
    """Fenced code blocks of a Markdown page (also inside list items), dedented."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not re.match(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", lines[j]):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        found.append(Block(str(path.relative_to(root)), i + 2, info, "\n".join(body) + "\n"))
        i = j + 1
    return found


def _pages() -> list[str]:
    runnable = (p for p in DOCS.rglob("*.md") if any(b.is_python and not b.skipped for b in blocks(p)))
    pages = sorted(str(p.relative_to(DOCS)) for p in runnable)
    return ["../README.md", *pages]


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """No broken link, anchor, nav entry, snippet include or API reference."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    site = tmp_path / "site"
    # The benchmark tables are on the page; the changelog is included from CHANGELOG.md, not copied.
    assert "Write a 256 MiB Arrow table" in (site / "benchmarks" / "index.html").read_text()
    assert "Keep a Changelog" in (site / "changelog" / "index.html").read_text()
    # mkdocstrings rendered the public API from the docstrings.
    reference = (site / "reference" / "index.html").read_text()
    for name in ("RemoteStoreResource", "RemoteStoreIOManager", "build_cleanup_sensor", "S3PyArrowResource"):
        assert f'id="remote_store_dagster.{name}"' in reference, name


def test_skipped_snippets_are_the_known_few() -> None:
    skipped: dict[str, int] = {}
    for path in DOCS.rglob("*.md"):
        for block in blocks(path):
            if block.is_python and block.skipped:
                skipped[block.page] = skipped.get(block.page, 0) + 1
    assert skipped == SKIPPED


def test_block_parser_sees_indented_and_skipped_blocks(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        '1. step\n\n   ```python\n   x = 1\n   ```\n\n```python {test="skip"}\ny\n```\n\n```bash\nls\n```\n'
    )
    found = blocks(page, root=tmp_path)
    assert [(b.code, b.is_python, b.skipped, b.line) for b in found] == [
        ("x = 1\n", True, False, 4),
        ("y\n", True, True, 8),
        ("ls\n", False, False, 12),
    ]


@pytest.mark.parametrize("page", _pages())
def test_snippets_run(
    page: str,
    seaweedfs_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bucket = "docs-" + re.sub(r"[^a-z0-9]+", "-", page.removesuffix(".md").lower()).strip("-")[:50]
    seaweedfs_server.create_bucket(bucket)
    monkeypatch.setenv("RS_S3_BUCKET", bucket)
    monkeypatch.setenv("RS_S3_KEY", seaweedfs_server.access_key)
    monkeypatch.setenv("RS_S3_SECRET", seaweedfs_server.secret_key)
    monkeypatch.setenv("RS_S3_ENDPOINT", seaweedfs_server.endpoint_url)
    monkeypatch.setenv("RS_S3_REGION", seaweedfs_server.region)
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.chdir(tmp_path)

    namespace: dict[str, object] = {"__name__": "docs_" + re.sub(r"\W+", "_", page.removesuffix(".md"))}
    ran = 0
    for block in blocks(DOCS / page):
        if not block.is_python or block.skipped:
            continue
        # Line numbers in tracebacks point into the Markdown page.
        code = compile("\n" * (block.line - 1) + block.code, str((DOCS / page).resolve()), "exec")
        exec(code, namespace)
        ran += 1
    assert ran > 0
    defs = namespace.get("defs")
    if isinstance(defs, Definitions):
        Definitions.validate_loadable(defs)


def _message_fragments(node: ast.expr) -> list[str]:
    """The literal text of an error message, split where values are formatted in."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)
        return text.split("\0")
    if isinstance(node, ast.BinOp):
        return [*_message_fragments(node.left), *_message_fragments(node.right)]
    return []


def _package_modules() -> list[Path]:
    package = ROOT / "remote_store_dagster"
    return [m for m in sorted(package.rglob("*.py")) if m.name != "testing.py"]  # testing.py: test helpers


def _literal_parts(node: ast.expr, shortest: int = 12) -> list[str]:
    parts = (p.strip(" :;,.") for fragment in _message_fragments(node) for p in re.split(r"%[sdr]", fragment))
    return [p for p in parts if len(p) >= shortest]


def raised_messages() -> list[tuple[str, str]]:
    """(where, longest literal part) of every ``raise X("...")`` in the package."""
    found = []
    for module in _package_modules():
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                longest = max(_literal_parts(node.exc.args[0]), key=len, default="")
                if longest and longest not in INTERNAL_ERRORS:
                    found.append((f"{module.relative_to(ROOT)}:{node.lineno}", longest))
    return found


def said_fragments() -> set[str]:
    """Every literal part (>= 8 characters) of a message the package raises or logs."""
    said: set[str] = set()
    for module in _package_modules():
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and node.args:
                said.update(_literal_parts(node.args[0], shortest=8))
    return said


def documented_messages() -> list[str]:
    """The first column of every troubleshooting table headed ``message``, without its backticks."""
    documented, in_messages = [], False
    for line in (DOCS / "troubleshooting.md").read_text().splitlines():
        if line.startswith("| message |"):
            in_messages = True
        elif not line.startswith("|"):
            in_messages = False
        elif in_messages and not line.startswith("|---"):
            cell = line.split(" | ")[0].removeprefix("| ")
            documented.append(cell)
    return documented


def test_troubleshooting_lists_every_error_message() -> None:
    """Each message the package raises has a row (cause and fix) on the troubleshooting page."""
    page = (DOCS / "troubleshooting.md").read_text()
    messages = raised_messages()
    assert len(messages) > 30
    missing = [f"{where}: {text!r}" for where, text in messages if text not in page]
    assert not missing, "add these to docs/troubleshooting.md:\n" + "\n".join(missing)


def test_every_documented_message_is_one_the_package_says() -> None:
    """The other direction: no row describes a message that no code raises or logs (any more)."""
    said = said_fragments()
    rows = documented_messages()
    assert len(rows) > 30
    unknown = [row for row in rows if not any(fragment in row for fragment in said)]
    assert not unknown, "docs/troubleshooting.md lists messages no code raises or logs:\n" + "\n".join(unknown)
