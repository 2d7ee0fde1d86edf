"""Packaging: the wheel built from the repository holds the package, its typing marker, the right
version and the documented extras. (CI also installs that wheel into a clean virtual environment
and runs a rule there: see ``.ci/run``.)"""

from __future__ import annotations

import email
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import robustagg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    try:
        import setuptools  # noqa: F401
    except ImportError:  # pragma: no cover
        pytest.skip("setuptools is needed to build the wheel without network")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        cwd=out,
    )
    (path,) = out.glob("robustagg-*.whl")
    return path


def _pyproject_version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, flags=re.M).group(1)


@pytest.mark.slow
def test_version_is_one_and_the_same(wheel):
    version = _pyproject_version()
    assert robustagg.__version__ == version
    assert wheel.name.startswith(f"robustagg-{version}-")


@pytest.mark.slow
def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "robustagg/__init__.py",
        "robustagg/py.typed",
        "robustagg/kernels/__init__.py",
        "robustagg/attacks/__init__.py",
        "robustagg/rules/signguard.py",
        "robustagg/integrations/flower.py",
        "robustagg/integrations/dask.py",
        "robustagg/flower.py",
        "robustagg/dask.py",
    ):
        assert required in names, required
    assert not any(n.startswith(("tests/", "benchmarks/", "docs/")) for n in names)
    assert not any("__pycache__" in n or n.endswith((".nbi", ".nbc")) for n in names)


@pytest.mark.slow
def test_wheel_metadata_extras_and_entry_point(wheel):
    z = zipfile.ZipFile(wheel)
    meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_string(z.read(meta_name).decode())
    extras = set(meta.get_all("Provides-Extra"))
    assert {"flower", "dask", "jax", "docs", "test", "torch"} <= extras
    requires = meta.get_all("Requires-Dist")
    assert any(re.match(r"flwr\[simulation\].*extra == \"flower\"", r) for r in requires)
    assert any(r.startswith("numba") and "extra" not in r for r in requires)
    entry_points = z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt"))).decode()
    assert "robustagg = robustagg.cli:main" in entry_points


def test_extras_are_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for extra in ("flower", "dask", "jax", "docs"):
        assert f"[{extra}]" in readme or f",{extra}" in readme or f"{extra}," in readme, extra
