"""Argument types shared by the ``robustagg`` subcommands, so that every subcommand reads
rules, attacks, seeds and its output path the same way.

- ``--rules`` / ``--attacks``: names separated by commas, spaces or both (``--rules a,b``,
  ``--rules a b``, ``--rules a, b``), looked up by :func:`robustagg._registry.resolve_name`
  (any case, ``-``/``_``/space equivalent, the tables' names such as ``Multi-Krum``); an
  unknown name is exit code 2 with the closest names suggested.
- ``--seeds``: a list of non-negative seeds, in the same forms.
- ``--out``: where the output goes; ``-o``/``--output`` remain as deprecated aliases where a
  subcommand had them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "add_names_argument",
    "add_out_argument",
    "add_seeds_argument",
    "attack_resolver",
    "rule_resolver",
    "split_items",
]

GLOB_CHARS = "*?["


def split_items(values: str | Iterable[str]) -> list[str]:
    """The items of ``"a,b"``, ``["a", "b"]`` or ``["a,", "b"]``: split on commas, stripped,
    empty ones dropped."""
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def rule_resolver(*, compose: bool = True, patterns: bool = False) -> Callable[[str], str]:
    """Registered rule name (or a ``+``-joined composition, or an fnmatch pattern) for a CLI item."""

    def resolve(item: str) -> str:
        from ._registry import normalize_name, resolve_name, resolve_rule_name

        if patterns and (item.lower() == "none" or any(c in item for c in GLOB_CHARS)):
            return "none" if item.lower() == "none" else normalize_name(item)
        if compose:
            return resolve_rule_name(item)
        return resolve_name(item, "rule")

    return resolve


def attack_resolver(*, extra: Sequence[str] = (), patterns: bool = False) -> Callable[[str], str]:
    """Registered attack name (or one of ``extra``, or an fnmatch pattern) for a CLI item."""

    def resolve(item: str) -> str:
        from ._registry import ATTACKS, normalize_name, resolve_name

        if patterns and (item.lower() == "none" or any(c in item for c in GLOB_CHARS)):
            return "none" if item.lower() == "none" else normalize_name(item)
        return resolve_name(item, "attack", [*ATTACKS, *(e for e in extra if e not in ATTACKS)])

    return resolve


class _NamesAction(argparse.Action):
    """Store the resolved names of one or more (comma- and/or space-separated) arguments."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, resolve: Callable[[str], str], **kw: Any):
        kw.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kw)
        self.resolve = resolve

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = split_items(values)
        if not items:
            raise argparse.ArgumentError(self, "expected at least one name")
        names: list[str] = []
        for item in items:
            try:
                name = self.resolve(item)
            except ValueError as exc:
                raise argparse.ArgumentError(self, str(exc)) from None
            if name not in names:
                names.append(name)
        setattr(namespace, self.dest, names)


def add_names_argument(
    parser: argparse.ArgumentParser,
    flag: str,
    resolve: Callable[[str], str],
    *,
    help: str,
    default: Any = None,
    metavar: str = "NAME",
    example: str = "Multi-Krum",
) -> None:
    """``flag`` taking names, comma- and/or space-separated; stores the list of resolved names."""
    parser.add_argument(
        flag,
        action=_NamesAction,
        resolve=resolve,
        default=default,
        metavar=metavar,
        help=f"{help}; separated by commas or spaces, in any case or as the tables print them ({example})",
    )


class _SeedsAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any):
        kw.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        items = split_items(values)
        try:
            seeds = [int(t) for t in items]
        except ValueError:
            seeds = []
        if not seeds or min(seeds) < 0:
            raise argparse.ArgumentError(
                self, f"seeds must be non-negative integers, got {' '.join(values)!r}"
            )
        setattr(namespace, self.dest, sorted(set(seeds)))


def add_seeds_argument(parser: argparse.ArgumentParser, *, default: list[int], help: str) -> None:
    """``--seeds``: a list of non-negative integer seeds (``0 1 2``, ``0,1,2``), stored sorted
    and without repeats."""
    parser.add_argument(
        "--seeds",
        action=_SeedsAction,
        default=list(default),
        metavar="SEED",
        help=f"{help}; separated by commas or spaces",
    )


def _output_file(text: str) -> str:
    """A file to write: its directory must exist (checked before any work)."""
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(text)))
    if not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f"the directory of {text!r} does not exist")
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, expected a file")
    return os.path.expanduser(text)


class _DeprecatedAlias(argparse.Action):
    """Store like the option it stands for, with a warning on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, replacement: str, **kw: Any):
        super().__init__(option_strings, dest, **kw)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(
            f"{parser.prog}: warning: {option_string} is deprecated, use {self.replacement}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_out_argument(
    parser: argparse.ArgumentParser,
    *,
    help: str,
    directory: bool = False,
    deprecated: Sequence[str] = (),
) -> None:
    """``--out``: the output file (whose directory must exist) or, with ``directory=True``, the
    output directory (created when needed). ``deprecated`` option strings (``-o``,
    ``--output``) still work, with a warning."""
    kind = str if directory else _output_file
    metavar = "DIR" if directory else "PATH"
    parser.add_argument("--out", type=kind, default=None, metavar=metavar, help=help)
    if deprecated:
        parser.add_argument(
            *deprecated,
            dest="out",
            type=kind,
            action=_DeprecatedAlias,
            replacement="--out",
            default=None,
            metavar=metavar,
            help=argparse.SUPPRESS,
        )
