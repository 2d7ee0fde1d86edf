"""The package's size limits (CONTRIBUTING.md, "Where things live"): no function over 80 lines
of code and no module over 700 lines in robustagg/, so that each part can be read on its own.

Lines of code exclude blank lines, comment lines and docstrings. A kernel that cannot be split
(one Numba function whose parts would cost a call per element) may be exempted by a comment
``# size: <why>`` on its ``def`` line's preceding line; there is none today.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "robustagg"
MAX_FUNCTION_CODE_LINES = 80
MAX_MODULE_LINES = 700
MODULES = sorted(PACKAGE.rglob("*.py"))


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    return lines


def code_lines(source: str, node: ast.AST, docstrings: set[int]) -> int:
    """Lines of ``node`` that are neither blank, nor a comment, nor part of a docstring."""
    lines = source.splitlines()
    count = 0
    for number in range(node.lineno, node.end_lineno + 1):
        text = lines[number - 1].strip()
        if text and not text.startswith("#") and number not in docstrings:
            count += 1
    return count


def _exempt(source: str, node: ast.AST) -> bool:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    previous = source.splitlines()[first - 2] if first >= 2 else ""
    return previous.strip().startswith("# size:")


def test_the_counter_counts_code_only():
    source = 'def f():\n    """doc\n    more"""\n    # comment\n\n    x = 1\n    return x\n'
    tree = ast.parse(source)
    assert code_lines(source, tree.body[0], _docstring_lines(tree)) == 3  # def, x = 1, return


def test_the_limit_catches_a_long_function():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_CODE_LINES))
    source = f"def long():\n{body}"
    tree = ast.parse(source)
    assert code_lines(source, tree.body[0], _docstring_lines(tree)) == MAX_FUNCTION_CODE_LINES + 1


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_module_and_function_sizes(path):
    source = path.read_text()
    n_lines = len(source.splitlines())
    assert n_lines <= MAX_MODULE_LINES, f"{path.name}: {n_lines} lines; split it by concern"
    tree = ast.parse(source)
    docstrings = _docstring_lines(tree)
    too_long = [
        f"{node.name} (line {node.lineno}): {code_lines(source, node, docstrings)} lines of code"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and code_lines(source, node, docstrings) > MAX_FUNCTION_CODE_LINES
        and not _exempt(source, node)
    ]
    assert not too_long, f"{path.name}: functions over {MAX_FUNCTION_CODE_LINES} lines of code: {too_long}"


def _private_names_imported(path: Path, source: str | None = None) -> list[str]:
    """``from X import _name`` where ``_name`` is not a module of the package (importing a
    private module, such as ``robustagg._threads``, is how the package shares its internals)."""
    found = []
    tree = ast.parse(path.read_text() if source is None else source)
    package_dir = path.parent
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = package_dir
        for _ in range(max(node.level - 1, 0)):
            base = base.parent
        if node.level == 0:
            if not (node.module or "").startswith("robustagg"):
                continue
            base = PACKAGE.parent
        target = base.joinpath(*(node.module or "").split(".")) if node.module else base
        for alias in node.names:
            name = alias.name
            if not name.startswith("_") or name.startswith("__"):
                continue
            if (target / f"{name}.py").exists() or (target / name / "__init__.py").exists():
                continue  # a private module
            found.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import {name}")
    return found


def test_the_private_import_check_sees_one():
    assert _private_names_imported(PACKAGE / "_params.py") == []
    source = "from ._validation import _row_sq_norm\nfrom . import _threads\n"
    found = _private_names_imported(PACKAGE / "probe.py", source)
    assert found == ["line 1: from ._validation import _row_sq_norm"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_no_module_imports_another_modules_private_names(path):
    found = _private_names_imported(path)
    assert not found, f"{path.name} imports private names of another module (make them public): {found}"
