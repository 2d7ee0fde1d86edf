"""Timings of the field's rules, pre-aggregators and attacks.

    python benchmarks/bench_field.py                      # n=50 d=1e6 and n=1000 d=1e5, float32
    python benchmarks/bench_field.py --sizes 50x1e5 --repeats 5
    python benchmarks/bench_field.py --only mda,caf
    python benchmarks/bench_field.py --coverage           # line_search vs ByzFL's optimal ALIE/IPM lines

For each (n, d) one synthetic matrix is built (honest rows mu + N(0, 1), mu ~ 0.1 N(0, 1), the
first f = floor(0.2 n) rows replaced by mu - 0.3 sigma, as in ``robustagg bench``). Every
function is first called on a small matrix (JIT compilation, or the load of Numba's cache,
reported as "warm-up"), then timed ``--repeats`` times on the big one; the median is printed.
Times are ``robustagg.bench``'s ``median_time`` (garbage collector off). ``robustagg bench``
(the benchmark entry point) also benchmarks every registered rule; this script adds the
pre-aggregators, the pipeline and the functions that need an extra input (FLTrust's
root gradient), and states where a rule refuses a size (exact subset searches).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import robustagg  # noqa: E402
from robustagg.attacks import fang, mimic  # noqa: E402
from robustagg.bench import median_time  # noqa: E402


def cases(G, f, root):
    """name -> (callable on (G, f), note). ``root`` is FLTrust's root gradient."""
    n = G.shape[0]
    smea_f = 2 if n <= 60 else None  # exhaustive (n-f)^3 eigenproblems: small n only
    mda_f = f if min(2**f, 10**9) <= 2**20 else 10
    return {
        "clipping": (lambda: robustagg.clipping(G), "pre-aggregator, adaptive (median norm)"),
        "nnm": (lambda: robustagg.nnm(G, f), "pre-aggregator, O(n^2 d) mixing"),
        "bucketing": (lambda: robustagg.bucketing(G, s=2, rng=0), "pre-aggregator, s=2"),
        "arc": (lambda: robustagg.arc(G, f), "pre-aggregator"),
        "nnm+mean": (lambda: robustagg.pipeline("nnm", "mean")(G, f), "pipeline"),
        "centered_clipping": (lambda: robustagg.centered_clipping(G, tau=10.0, n_iters=5), "5 iterations"),
        "mda": (lambda: robustagg.mda(G, mda_f), f"f={mda_f}"),
        "monna": (lambda: robustagg.monna(G, f), "medoid reference"),
        "caf": (lambda: robustagg.caf(G, f), ""),
        "smea": (
            (lambda: robustagg.smea(G, smea_f)) if smea_f else None,
            f"f={smea_f}" if smea_f else "skipped: C(n,f) eigenproblems of size n-f",
        ),
        "meamed": ((lambda: robustagg.meamed(G, f)) if hasattr(robustagg, "meamed") else None, ""),
        "fltrust": (lambda: robustagg.fltrust(G, root), "root gradient given"),
        "clipped_clustering": (lambda: robustagg.clipped_clustering(G), ""),
        "attack fang": (lambda: fang(G, f, rng=0), "attack"),
        "attack mimic": (lambda: mimic(G, f), "attack, heuristic target"),
    }


def synthetic(n, d, dtype, seed=0):
    rng = np.random.default_rng(seed)
    mu = (0.1 * rng.standard_normal(d)).astype(dtype)
    G = rng.standard_normal((n, d), dtype=np.float32).astype(dtype, copy=False)
    G += mu
    f = int(0.2 * n)
    if f:
        G[:f] = mu - 0.3 * G[f:].std(axis=0)
    root = np.asarray(G[f : f + 5].mean(axis=0))
    return G, f, root


def coverage(rules=("mean", "mda", "caf", "monna", "centered_clipping", "clipped_clustering")):
    """Deviation ||rule(G') - benign mean|| reached by ``line_search`` and by direct grids over
    ByzFL's optimal-ALIE line (mu + tau sigma), its mirror (mu - tau sigma) and the IPM line
    (-tau mu), statistics over the benign rows (n = 20, f = 4, d = 50, seed 0)."""
    from robustagg._registry import call_with_supported
    from robustagg.attacks import line_search

    rng = np.random.default_rng(0)
    n, f, d = 20, 4, 50
    H = 0.1 * rng.normal(size=d) + rng.normal(size=(n, d))
    byz = np.arange(n) < f
    target = H[~byz].mean(axis=0)
    mu, sd = H[~byz].mean(axis=0), H[~byz].std(axis=0, ddof=1)
    taus = np.concatenate([[0.0], 0.01 * 2 ** np.arange(0, 16, 0.25)])

    def deviation(rule, x):
        G = H.copy()
        G[byz] = x
        return float(np.linalg.norm(call_with_supported(rule, G, f=f) - target))

    print(
        f"{'rule':<20} {'mu+tau*sd':>10} {'mu-tau*sd':>10} {'-tau*mu':>9} {'ls all':>8} {'ls std':>8} {'ls ipm':>8}"
    )
    for name in rules:
        rule = robustagg.RULES[name]
        plus = max(deviation(rule, mu + t * sd) for t in taus)
        minus = max(deviation(rule, mu - t * sd) for t in taus)
        ipm = max(deviation(rule, -t * mu) for t in taus)
        found = [
            line_search(H, f, rule=name, directions=dirs, benign_only=True, return_info=True)[1]["deviation"]
            for dirs in (("std", "unit_vec", "sign"), ("std",), ("unit_vec",))
        ]
        print(
            f"{name:<20} {plus:>10.3f} {minus:>10.3f} {ipm:>9.3f} {found[0]:>8.3f} {found[1]:>8.3f} {found[2]:>8.3f}"
        )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes", default="50x1e6,1000x1e5", help="comma-separated NxD (default 50x1e6,1000x1e5)"
    )
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated names to run")
    ap.add_argument(
        "--coverage", action="store_true", help="compare line_search with ByzFL's optimal ALIE/IPM lines"
    )
    args = ap.parse_args(argv)
    if args.coverage:
        coverage()
        return
    dtype = np.dtype(args.dtype)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    Gs, fs, roots = synthetic(12, 64, dtype)
    warm = {}
    for name, (fn, _) in cases(Gs, 2, roots).items():
        if fn is None or (only and name not in only):
            continue
        warm[name] = median_time(fn, repeats=1, warmup=0)[0]
    for size in args.sizes.split(","):
        n, d = (int(float(x)) for x in size.lower().split("x"))
        G, f, root = synthetic(n, d, dtype)
        gb = G.nbytes / 1e9
        floor = median_time(lambda G=G: G.sum(axis=0, dtype=np.float64), repeats=1, warmup=0)[0]
        print(f"\nn={n} d={d} {dtype.name} f={f} ({gb:.2f} GB; one NumPy pass over G: {floor * 1e3:.0f} ms)")
        print(f"{'function':<20} {'median (s)':>11} {'x pass':>8} {'warm-up (s)':>12}  note")
        for name, (fn, note) in cases(G, f, root).items():
            if only and name not in only:
                continue
            if fn is None:
                print(f"{name:<20} {'-':>11} {'-':>8} {'-':>12}  {note or 'not available'}")
                continue
            try:
                med = median_time(fn, repeats=args.repeats, warmup=0)[0]
            except ValueError as exc:  # a documented size limit
                print(f"{name:<20} {'-':>11} {'-':>8} {'-':>12}  refused: {exc}")
                continue
            print(
                f"{name:<20} {med:>11.3f} {med / floor:>8.1f} {warm.get(name, float('nan')):>12.2f}  {note}"
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
