"""The kernel package's boundary (robustagg/kernels/__init__.py, "The modules, by concern").

Read from the sources (``ast``; nothing is imported, nothing compiled):

* a kernel module imports from another kernel module only names that module lists in its
  ``__all__`` (no underscore name, no ``from . import _module`` to reach into it);
* the kernel modules import each other without cycles;
* no kernel module defines a tuning constant of its own: they all live in
  ``robustagg._thresholds``, which stays pure Python;
* the rest of the library reaches the kernels only through ``robustagg.kernels``' public names
  (no import of, or lazy binding to, a private kernel module).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "robustagg"
KERNELS = PACKAGE / "kernels"
KERNEL_MODULES = sorted(p.stem for p in KERNELS.glob("*.py") if p.stem != "__init__")

# Module-level constants a kernel module may keep: they are not tuning (bit patterns of the
# float32 sort keys, an LLVM intrinsic's name)
NOT_TUNING = {("_select", "_KEY_POS_INF"), ("_select", "_KEY_NEG_INF"), ("_gramtile", "_FMA")}

_CONSTANT_NAME = re.compile(r"^_?[A-Z][A-Z0-9_]*$")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of the module an ``ImportFrom`` reads from."""
    if node.level == 0:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.stem != "__init__":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _all_names(path: Path) -> set[str]:
    """The strings of a module's ``__all__`` (its ``__all__ = [...]`` and ``__all__ += [...]``)."""
    names: set[str] = set()
    for node in _tree(path).body:
        target = None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            target = node.target
        if isinstance(target, ast.Name) and target.id == "__all__" and node.value is not None:
            names.update(
                elt.value
                for elt in ast.walk(node.value)
                if isinstance(elt, ast.Constant) and isinstance(elt.value, str)
            )
    return names


def _kernel_imports(stem: str) -> list[tuple[str, str, int]]:
    """(source kernel module, imported name, line) for every import of a kernel module by the
    kernel module ``stem`` (``from . import X`` gives the module itself as the source)."""
    path = KERNELS / f"{stem}.py"
    found = []
    for node in ast.walk(_tree(path)):
        if not isinstance(node, ast.ImportFrom):
            continue
        source = _resolve(path, node)
        if source == "robustagg.kernels":
            found += [(alias.name, alias.name, node.lineno) for alias in node.names]
        elif source.startswith("robustagg.kernels."):
            found += [(source.rsplit(".", 1)[1], alias.name, node.lineno) for alias in node.names]
    return found


def test_the_kernel_modules_are_the_ones_the_package_docstring_maps():
    doc = ast.get_docstring(_tree(KERNELS / "__init__.py")) or ""
    assert [m for m in KERNEL_MODULES if f"``{m}``" not in doc] == []


@pytest.mark.parametrize("stem", KERNEL_MODULES)
def test_a_kernel_module_imports_only_public_names_of_the_others(stem):
    bad = []
    for source, name, line in _kernel_imports(stem):
        if source == name:  # ``from . import X``: a module object (open to its underscore names)
            # or a name of the package, which imports every kernel module (a cycle)
            bad.append(f"{stem}.py:{line}: from . import {name} (import public names from their module)")
            continue
        exported = _all_names(KERNELS / f"{source}.py")
        if name.startswith("_") or name not in exported:
            bad.append(f"{stem}.py:{line}: {name} from {source} (not in its __all__ {sorted(exported)})")
    assert bad == []


def test_the_package_imports_only_public_names_of_its_modules():
    init = KERNELS / "__init__.py"
    bad = []
    for node in ast.walk(_tree(init)):
        if isinstance(node, ast.ImportFrom) and _resolve(init, node).startswith("robustagg.kernels."):
            source = _resolve(init, node).rsplit(".", 1)[1]
            exported = _all_names(KERNELS / f"{source}.py")
            bad += [(source, a.name) for a in node.names if a.name.startswith("_") or a.name not in exported]
    assert bad == []
    assert {n for n in _all_names(init) if n.startswith("_")} == set()


def test_the_kernel_modules_import_each_other_without_cycles():
    graph = {stem: sorted({src for src, _, _ in _kernel_imports(stem)}) for stem in KERNEL_MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(stem: str, path: list[str]) -> list[str] | None:
        state[stem] = 1
        for dep in graph.get(stem, []):
            if state.get(dep) == 1:
                return path + [stem, dep]
            if dep not in state:
                cycle = visit(dep, path + [stem])
                if cycle:
                    return cycle
        state[stem] = 2
        return None

    for stem in KERNEL_MODULES:
        if stem not in state:
            assert visit(stem, []) is None, "import cycle"


@pytest.mark.parametrize("stem", KERNEL_MODULES)
def test_a_kernel_module_defines_no_tuning_constant(stem):
    """Block widths, lanes, network and tile shapes, chunking and tolerances are
    ``robustagg._thresholds``'s; a kernel module reads them from there (an ``import ... as``
    alias is fine), it assigns none at module level."""
    defined = []
    for node in _tree(KERNELS / f"{stem}.py").body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name) and _CONSTANT_NAME.match(target.id):
                if (stem, target.id) not in NOT_TUNING:
                    defined.append(f"{stem}.py:{node.lineno}: {target.id}")
    assert defined == []


def test_the_thresholds_module_stays_pure_python():
    """``robustagg.testing.strategies`` imports it without Numba: only the standard library."""
    imported = set()
    for node in ast.walk(_tree(PACKAGE / "_thresholds.py")):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add("." if node.level else (node.module or "").split(".")[0])
    assert imported <= {"__future__", "dataclasses"}


def test_the_library_uses_the_kernels_only_through_the_package():
    """Outside robustagg/kernels/: no import from a private kernel module, no lazy binding to
    one (``LazyModule("robustagg.kernels._...")``), and every name imported from
    ``robustagg.kernels`` is in its ``__all__``."""
    public = _all_names(KERNELS / "__init__.py")
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if KERNELS in path.parents:
            continue
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom):
                source = _resolve(path, node)
                names = [a.name for a in node.names]
                if source.startswith("robustagg.kernels."):
                    bad.append(f"{where}:{node.lineno}: from {source} import {', '.join(names)}")
                elif source == "robustagg.kernels":
                    bad += [f"{where}:{node.lineno}: {n}" for n in names if n not in public]
            elif isinstance(node, ast.Import):
                bad += [
                    f"{where}:{node.lineno}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("robustagg.kernels.")
                ]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"robustagg\.kernels\.\w+", node.value):
                    bad.append(f"{where}:{node.lineno}: {node.value!r}")
    assert bad == []
