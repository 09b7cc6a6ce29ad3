"""The package is ready to release: it builds, passes ``twine check``, and works once installed.

The wheel is installed into a fresh virtual environment outside the repository (``--no-deps``;
its dependencies come from the test venv's site-packages through a ``.pth`` line, which keeps
this test offline and fast). The example project is not part of the wheel: a copy of it, outside
the repository, is validated against the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import remote_store_dagster

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _clean_env() -> dict[str, str]:
    """The caller's environment minus anything that would put the repository on sys.path."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # sdist first, then the wheel built from the unpacked sdist (what `python -m build` does).
    _run([sys.executable, "-m", "build", "--outdir", str(out)], cwd=ROOT, env=_clean_env(), timeout=600)
    return out


def test_sdist_and_wheel_build_and_pass_twine_check(dist: Path) -> None:
    version = remote_store_dagster.__version__
    sdist = dist / f"remote_store_dagster-{version}.tar.gz"
    wheel = dist / f"remote_store_dagster-{version}-py3-none-any.whl"
    assert sdist.is_file(), sorted(p.name for p in dist.iterdir())
    assert wheel.is_file(), sorted(p.name for p in dist.iterdir())
    _run([sys.executable, "-m", "twine", "check", "--strict", str(sdist), str(wheel)], cwd=dist)

    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(f"remote_store_dagster-{version}.dist-info/METADATA").decode()
    assert "remote_store_dagster/py.typed" in names
    assert f"remote_store_dagster-{version}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if n.startswith(("tests/", "example_project/", "bench/", "docs/"))]
    # Single-sourced version; requires-python and classifiers say what scripts/test runs.
    assert f"Version: {version}" in metadata
    assert "Requires-Python: <3.14,>=3.11" in metadata or "Requires-Python: >=3.11,<3.14" in metadata
    tested = [f"3.{minor}" for minor in (11, 12, 13)]
    classified = [
        line.rsplit(":: ", 1)[1]
        for line in metadata.splitlines()
        if line.startswith("Classifier: Programming Language :: Python :: 3.")
    ]
    assert classified == tested
    with tarfile.open(sdist) as tf:
        members = tf.getnames()
    assert f"remote_store_dagster-{version}/README.md" in members
    assert f"remote_store_dagster-{version}/pyproject.toml" in members
    assert f"remote_store_dagster-{version}/LICENSE" in members


def test_version_is_single_sourced() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "remote_store_dagster._version.__version__"
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{remote_store_dagster.__version__}]" in changelog or "## [Unreleased]" in changelog


def test_installed_wheel_imports_and_validates_the_example(dist: Path, tmp_path: Path) -> None:
    version = remote_store_dagster.__version__
    wheel = dist / f"remote_store_dagster-{version}-py3-none-any.whl"
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        cwd=tmp_path,
        env=_clean_env(),
    )
    # Dependencies: the test venv's site-packages, after the fresh one. Its .pth files (including
    # the editable install of this repository) are not processed for a path added this way.
    fresh_site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
            env=_clean_env(),
        ).strip()
    )
    (fresh_site / "_rsd_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # The example project is not in the wheel: validate a copy of it, outside the repository.
    work = tmp_path / "outside"
    shutil.copytree(ROOT / "example_project", work / "example_project", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "workspace.yaml", work / "workspace.yaml")
    env = _clean_env()
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    (tmp_path / "dagster_home").mkdir()

    where = _run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, remote_store_dagster as r; print(r.__file__); print(r.__version__); "
            "print(m.version('remote-store-dagster'))",
        ],
        cwd=work,
        env=env,
    ).split()
    assert where[0].startswith(str(fresh_site)), f"imported from {where[0]}, not from the installed wheel"
    assert where[1:] == [version, version]

    proc = subprocess.run(
        [str(python), "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "example_project" in output and "success" in output.lower(), output
