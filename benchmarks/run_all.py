"""Regenerate the published benchmark figures (docs/benchmarks.md): JSON, plots and tables.

    python benchmarks/run_all.py                 # run everything (about an hour on 2 shared cores)
    python benchmarks/run_all.py --only targets  # one suite
    python benchmarks/run_all.py --report-only   # re-draw plots and tables from the saved JSON

Each suite is one ``robustagg bench --preset`` command (SUITES: suite -> preset, e.g.
``targets_1thread`` -> ``docs-targets-1thread``; printed before it runs and recorded in the
JSON; ``robustagg bench --help`` lists the presets, ``robustagg.bench.PRESETS`` holds their
exact options) whose result goes to
``benchmarks/results/<suite>.json``; this script adds the plots (``docs/img/``) and the Markdown
tables (``benchmarks/results/summary.md``).

Suites (float32)
------
targets          every rule at n=50, d=1e6, all threads: read floor, one X @ X.T, np.median,
                 NumPy baselines, peak memory (the issue's target cell)
targets_1thread  the same cell at one thread, without baselines (CPU-time ratios)
targets_n1000    every rule at n=1000, d=1e5 (the "under 2 s" target)
byzfl            the rules byzfl also has, at n=50, d=1e5, against byzfl (optional extra)
attacks          every attack at n=50, d=1e6, with NumPy and byzfl baselines
scaling_d        every rule at n=50, d = 1e3 ... 1e6 (time against d)
scaling_n        every rule at d=1e5, n = 10, 50, 200 (time against n; n = 1000 is targets_n1000)
smea and mda (exhaustive subset searches, refused above their max_subsets) are left out of
scaling_n and targets_n1000.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMG = ROOT / "docs" / "img"

SUITES: dict[str, str] = {
    # suite (its JSON is results/<suite>.json) -> the robustagg bench preset that measures it
    "targets": "docs-targets",  # the issue's target cell, all threads, NumPy baselines and references
    "targets_1thread": "docs-targets-1thread",  # the same cell at one thread (steady CPU-time ratios)
    "targets_n1000": "docs-targets-n1000",  # every rule under 2 s at n = 1000, d = 1e5
    "byzfl": "docs-byzfl",  # byzfl's implementations of the same rules (optional extra)
    "attacks": "docs-attacks",
    "scaling_d": "docs-scaling-d",
    "scaling_n": "docs-scaling-n",
}


def run_suite(name: str, extra: list[str]) -> Path:
    out = RESULTS / f"{name}.json"
    args = ["--preset", SUITES[name], *extra]
    cmd = [sys.executable, "-m", "robustagg", "bench", *args, "--json", str(out)]
    shown = "robustagg bench " + " ".join(shlex.quote(a) for a in args)
    print(f"\n=== {name}: {shown}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    data = json.loads(out.read_text())
    data["command"] = shown
    out.write_text(json.dumps(data, indent=1))
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _load(name: str) -> dict | None:
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def _ms(s):
    return "-" if s is None else (f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s")


def _x(v, spec=".2f"):
    return "-" if v is None else f"{v:{spec}}"


def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope of log(y) against log(x) (1.0 = linear)."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def table_targets(data: dict) -> str:
    cells = {(c["n"], c["d"], c["threads"]): c for c in data["cells"]}
    lines = []
    for (n, d, threads), c in sorted(cells.items(), key=lambda kv: (-kv[0][1], -kv[0][2])):
        lines.append(
            f"\n**n = {n}, d = {d:.0e}, float32, {c['threads']} threads** -- read floor {_ms(c['floor_s'])} "
            f"({c['floor_method']}, {c['floor_gbps']:.1f} GB/s), one X @ X.T {_ms(c.get('gram_s'))}, "
            f"np.median {_ms(c.get('np_median_s'))}; load average {c.get('loadavg_start')} -> {c.get('loadavg_end')}\n"
        )
        lines.append(
            "| rule | median time | GB/s | x floor | x floor (CPU) | x X@X.T | vs np.median | vs NumPy | vs byzfl | compile | "
            "cache load | peak extra (of input) |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in data["rows"]:
            if (r["n"], r["d"], r["threads"]) != (n, d, threads) or r["kind"] != "rule":
                continue
            if r.get("status") != "ok":
                lines.append(
                    f"| {r['name']} | {r.get('status')}: {r.get('error') or r.get('reason')} |||||||||"
                )
                continue
            pe = r.get("peak_extra_bytes")
            lines.append(
                f"| {r['name']} | {_ms(r['time_s'])} | {_x(r['gbps'])} | {_x(r['x_floor'])} | {_x(r.get('x_floor_cpu'))} | "
                f"{_x(r.get('x_gram'))} | "
                f"{_x(r.get('speedup_np_median'), '.1f')}x | {_x(r.get('speedup_numpy'), '.1f')}x | "
                f"{_x(r.get('speedup_byzfl'), '.1f')}x | {_x(r.get('compile_s'), '.1f')} s | "
                f"{_x(r.get('cache_load_s'), '.2f')} s | "
                + ("-" if pe is None else f"{pe / 2**20:.1f} MiB ({100 * r['peak_extra_frac']:.1f} %)")
                + " |"
            )
    lines.append("\n| target | rule | threads | value | bound | met |")
    lines.append("|---|---|---|---|---|---|")
    for t in data.get("targets", []):
        bound = f"<= {t['max']:g}" if t.get("max") is not None else f">= {t['min']:g}"
        mark = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(
            f"| {t['metric']} (n={t['n']}, d={t['d']:.0e}) | {t['rule']} | {t['threads']} | {_x(t['value'], '.3g')} | {bound} | {mark} |"
        )
    return "\n".join(lines)


def table_attacks(data: dict) -> str:
    c = data["cells"][0]
    lines = [
        f"\n**n = {c['n']}, d = {c['d']:.0e}, float32, {c['threads']} threads** -- read floor {_ms(c['floor_s'])}\n",
        "| attack | median time | GB/s | x floor | vs NumPy | vs byzfl | compile | peak extra (of input) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        if r["kind"] != "attack":
            continue
        if r.get("status") != "ok":
            lines.append(f"| {r['name']} | {r.get('status')}: {r.get('error') or r.get('reason')} |||||||")
            continue
        pe = r.get("peak_extra_bytes")
        lines.append(
            f"| {r['name']} | {_ms(r['time_s'])} | {_x(r['gbps'])} | {_x(r['x_floor'])} | "
            f"{_x(r.get('speedup_numpy'), '.1f')}x | {_x(r.get('speedup_byzfl'), '.1f')}x | "
            f"{_x(r.get('compile_s'), '.1f')} s | "
            + ("-" if pe is None else f"{pe / 2**20:.1f} MiB ({100 * r['peak_extra_frac']:.0f} %)")
            + " |"
        )
    return "\n".join(lines)


def _series(data: dict, axis: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in _ok(data["rows"]):
        if r["kind"] == "rule":
            out.setdefault(r["name"], []).append((r[axis], r["time_s"]))
    floors = sorted((c[axis], c["floor_s"]) for c in data["cells"])
    out["(read floor)"] = floors
    return {k: sorted(v) for k, v in out.items()}


def table_scaling(data: dict, axis: str) -> str:
    series = _series(data, axis)
    xs = sorted({x for v in series.values() for x, _ in v})
    head = "| rule | " + " | ".join(f"{axis} = {x:.0e}" if axis == "d" else f"{axis} = {x}" for x in xs)
    head += " | slope (log-log" + (", d >= 1e5)" if axis == "d" else ")") + " |"
    lines = [head, "|---" * (len(xs) + 2) + "|"]
    for name, pts in sorted(series.items()):
        t = dict(pts)
        fit = [(x, y) for x, y in pts if axis != "d" or x >= 10**5]
        slope = loglog_slope([p[0] for p in fit], [p[1] for p in fit])
        lines.append(f"| {name} | " + " | ".join(_ms(t.get(x)) for x in xs) + f" | {_x(slope)} |")
    return "\n".join(lines)


def table_threads(data: dict) -> str:
    rows = _ok(data["rows"])
    names = sorted({r["name"] for r in rows})
    keys = sorted({(r["dtype"], r["threads"]) for r in rows})
    lines = [
        "| rule | " + " | ".join(f"{dt}, {t} thr" for dt, t in keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    t = {(r["name"], r["dtype"], r["threads"]): r["time_s"] for r in rows}
    for nm in names:
        lines.append(f"| {nm} | " + " | ".join(_ms(t.get((nm, dt, th))) for dt, th in keys) + " |")
    fl = {(c["dtype"], c["threads"]): c["floor_s"] for c in data["cells"]}
    lines.append("| (read floor) | " + " | ".join(_ms(fl.get(k)) for k in keys) + " |")
    return "\n".join(lines)


def plot_scaling(data: dict, axis: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(data, axis)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=90)
    for name, pts in sorted(series.items()):
        xs, ys = zip(*pts, strict=True)
        style = (
            dict(color="black", linestyle="--", linewidth=2)
            if name.startswith("(")
            else dict(marker="o", markersize=3)
        )
        ax.loglog(xs, ys, label=name, **style)
    c0 = data["cells"][0]
    fixed = f"n = {c0['n']}" if axis == "d" else f"d = {c0['d']:.0e}"
    ax.set_xlabel(axis + (" (parameters)" if axis == "d" else " (clients)"))
    ax.set_ylabel("median time per call (s)")
    ax.set_title(f"time against {axis} ({fixed}, float32, {c0['threads']} threads)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def report() -> str:
    parts = []
    for name, fn in (
        ("targets", table_targets),
        ("targets_1thread", table_targets),
        ("targets_n1000", table_targets),
        ("byzfl", table_targets),
        ("attacks", table_attacks),
    ):
        data = _load(name)
        if data:
            parts.append(f"## {name}\n\n`{data.get('command')}`\n{fn(data)}\n")
    for name, axis in (("scaling_d", "d"), ("scaling_n", "n")):
        data = _load(name)
        if data:
            plot_scaling(data, axis, IMG / f"bench_{name}.png")
            parts.append(f"## {name}\n\n`{data.get('command')}`\n\n{table_scaling(data, axis)}\n")
    data = _load("threads")
    if data:
        parts.append(f"## threads\n\n`{data.get('command')}`\n\n{table_threads(data)}\n")
    text = "\n".join(parts)
    (RESULTS / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(SUITES), help="comma-separated suites (default all)")
    ap.add_argument(
        "--report-only", action="store_true", help="only re-draw plots and tables from saved JSON"
    )
    ap.add_argument(
        "extra", nargs=argparse.REMAINDER, help="after --: extra options for every robustagg bench call"
    )
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.extra if a != "--"]
    if not args.report_only:
        for name in args.only.split(","):
            if name not in SUITES:
                ap.error(f"unknown suite {name!r}; available: {', '.join(SUITES)}")
            run_suite(name, extra)
    print(report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
