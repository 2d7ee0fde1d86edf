"""The docs site: every public module is in the API reference, every page is in the nav, and every
```python block of README.md and docs/ runs as written, as a script. (CI also builds the site with
``mkdocs build --strict``.)"""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
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
        # module.__name__: robustagg.flower and robustagg.dask are the integrations' modules
        if getattr(module, "__all__", None) and module.__name__ not in documented:
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


# A ```python block preceded by this comment line is a fragment (names defined elsewhere on the
# page): it is shown, not run. Keep them rare: a reader copies a snippet and runs it.
FRAGMENT = "<!-- fragment -->"
# Each snippet runs in a fresh interpreter (1.5-4 s; Flower's and Dask's start process pools:
# 20-30 s): the fast loop (-m "not slow") runs the README's, the full suite runs them all.
FAST_PAGES = ("README.md",)
# imports that come from an extra: without it the snippet is skipped (CI installs them all)
OPTIONAL = ("torch", "jax", "flwr", "dask", "distributed", "hypothesis", "matplotlib")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def _snippets() -> list[tuple[str, int, str, bool]]:
    """Every ```python block of README.md and docs/**/*.md: (page, line, code, is_fragment)."""
    found = []
    for page in _pages():
        text = page.read_text(encoding="utf-8")
        for match in re.finditer(r"^```python[ \t]*\n(.*?)^```", text, flags=re.S | re.M):
            line = text.count("\n", 0, match.start()) + 1
            preceding = text[: match.start()].rstrip().rsplit("\n", 1)[-1].strip()
            found.append((page.relative_to(ROOT).as_posix(), line, match.group(1), preceding == FRAGMENT))
    return found


def _snippet_params():
    params = []
    for page, line, code, fragment in _snippets():
        if fragment:
            continue
        marks = [] if page in FAST_PAGES else [pytest.mark.slow]
        params.append(pytest.param(page, line, code, marks=marks, id=f"{page}:{line}"))
    return params


@pytest.mark.parametrize(("page", "line", "code"), _snippet_params())
def test_snippet_runs_as_a_script(page, line, code, tmp_path):
    """Each snippet runs as written, as a script in a fresh interpreter (a reader's copy-paste)."""
    for module in OPTIONAL:
        if re.search(rf"^\s*(?:import|from)\s+{module}\b", code, flags=re.M):
            pytest.importorskip(module)
    script = tmp_path / "snippet.py"
    script.write_text(code, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # whatever a snippet writes (Dask's worker space, ...) stays out of the tree
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        f"{page}, the ```python block at line {line}, exits with {proc.returncode}:\n{proc.stderr[-4000:]}"
    )


def test_snippets_found_and_fragments_rare():
    """The collector sees the quick starts; a fragment marker sits right before a python block."""
    snippets = _snippets()
    runnable = {(page, line) for page, line, _, fragment in snippets if not fragment}
    assert any(page == "README.md" for page, _ in runnable)
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for heading in ("Quick start: NumPy", "Quick start: PyTorch", "Quick start: Flower", "Quick start: Dask"):
        start = index.count("\n", 0, index.index(f"## {heading}\n")) + 1
        end = start + index.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0].count("\n")
        assert any(p == "docs/index.md" and start < line < end for p, line in runnable), heading
    fragments = [f"{page}:{line}" for page, line, _, fragment in snippets if fragment]
    assert len(fragments) <= 3, f"too many fragments (make them run as written): {fragments}"
    markers = sum(page.read_text(encoding="utf-8").count(FRAGMENT) for page in _pages())
    assert markers == len(fragments), "a fragment marker that is not right before a ```python block"


def test_functions_with_built_docstrings_reach_the_api_pages():
    """SignGuard's functions get their docstrings at import (from the options table); the docs'
    griffe extension (docs/_ext/runtime_docstrings.py, named in mkdocs.yml) must hand them to the
    API pages, which otherwise hide a function without a docstring in its source."""
    griffe = pytest.importorskip("griffe")
    assert "docs/_ext/runtime_docstrings.py:RuntimeDocstrings" in (ROOT / "mkdocs.yml").read_text()
    extensions = griffe.load_extensions(f"{ROOT / 'docs/_ext/runtime_docstrings.py'}:RuntimeDocstrings")
    module = griffe.load("robustagg.rules.signguard", search_paths=[str(ROOT)], extensions=extensions)
    for name in ("signguard", "signguard_sim", "signguard_dist"):
        doc = module[name].docstring
        assert doc is not None, name
        assert "coordinate_fraction" in doc.value and "Parameters" in doc.value, name
    bare = griffe.load("robustagg.rules.signguard", search_paths=[str(ROOT)])
    assert bare["signguard"].docstring is None  # what the extension is for
