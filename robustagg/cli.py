"""The ``robustagg`` command line: one entry point, one subcommand per job.

Each subcommand lives in the module that owns the work and provides two functions,
``configure_parser(parser)`` and ``run(args) -> int``; this module only wires them up, so that
``robustagg --help`` stays fast (modules are imported when their subcommand runs).
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "throughput": (
        "robustagg.bench.throughput",
        "throughput table of every rule (alias of `robustagg bench --preset throughput`)",
    ),
    "experiment": (
        "robustagg.training.experiment",
        "reproduce the paper's experiments with the built-in trainer",
    ),
    "bench": (
        "robustagg.bench",
        "benchmark every rule and attack across n, d, dtype and threads (presets: --preset NAME)",
    ),
    "matrix": ("robustagg.robustness", "robustness matrix: every rule x every attack on synthetic gradients"),
    "warmup": ("robustagg.warmup", "compile every kernel into Numba's on-disk cache (after pip install)"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # a clear message and exit code 2, never a traceback
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="robustagg", description="Byzantine-robust aggregation rules and attacks.")
    parser.add_argument("--version", action="version", version=f"robustagg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # subcommand whose module is not part of this installation
        module.configure_parser(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"robustagg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"robustagg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
