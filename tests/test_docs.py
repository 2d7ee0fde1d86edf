"""The docs site: every public module is in the API reference, every page is in the nav, and the
NumPy/PyTorch quick starts run as written. (CI also builds the site with ``mkdocs build --strict``.)"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import robustagg

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# modules without public API of their own (wiring, entry points)
NOT_DOCUMENTED = {"robustagg.cli", "robustagg.__main__", "robustagg.kernels", "robustagg.attacks._common"}


def _documented() -> set[str]:
    targets = set()
    for page in (DOCS / "api").glob("*.md"):
        targets |= set(re.findall(r"^:::\s+([\w.]+)", page.read_text(), flags=re.M))
    return targets


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(robustagg.__path__, "robustagg."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]) and not info.name.endswith(
            "__main__"
        ):
            continue
        if info.name in NOT_DOCUMENTED or info.name.startswith("robustagg.kernels"):
            continue
        names.append(info.name)
    return names


def test_every_public_module_is_in_the_api_reference():
    documented = _documented()
    missing = []
    for name in _public_modules():
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra that is not installed
            continue
        if getattr(module, "__all__", None) and name not in documented:
            missing.append(name)
    assert not missing, f"add these modules to a docs/api/*.md page: {missing}"


def test_every_top_level_name_is_documented():
    documented = _documented()
    missing = []
    for name in robustagg.__all__:
        obj = getattr(robustagg, name)
        module = getattr(obj, "__module__", None) or ""
        if (
            f"robustagg.{name}" in documented
            or module in documented
            or (getattr(obj, "__name__", "") == f"robustagg.{name}" and obj.__name__ in documented)
        ):
            continue
        if name in ("ATTACKS", "RULES", "PREAGGREGATORS"):  # registries, described in the core page
            continue
        missing.append(f"{name} ({module})")
    assert not missing, f"not in the API reference: {missing}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    missing = [p for p in pages if p not in nav]
    assert not missing, f"add to the nav in mkdocs.yml: {missing}"


def _python_blocks(page: str, heading: str) -> list[str]:
    text = (DOCS / page).read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.parametrize("heading", ["Quick start: NumPy", "Quick start: PyTorch", "Quick start: Flower"])
def test_quick_starts_run(heading, capsys):
    """The blocks run as written (the Flower one defines its ServerApp: imports and names checked)."""
    pytest.importorskip("torch")
    if "Flower" in heading:
        pytest.importorskip("flwr")
    blocks = _python_blocks("index.md", heading)
    assert blocks
    for code in blocks:
        exec(compile(code, f"docs/index.md ({heading})", "exec"), {})
