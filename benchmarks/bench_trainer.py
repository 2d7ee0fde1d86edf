"""The built-in trainer on real data: one epoch, and what a 60-epoch cell of a preset costs.

Loads the dataset the way ``robustagg experiment --dataset NAME`` does (default Fashion-MNIST
from its IDX files, see ``robustagg.training.idx`` for where they are looked for), then times
epochs of one cell's training (default: Mean, no attack, the MLP, n = 50 clients, batch 16 --
75 rounds an epoch on Fashion-MNIST) with one Numba/BLAS thread, as the experiment's cells run.

Printed: the load time (reading, scaling, float32 standardisation) and the content hash's time;
per epoch the median wall time and process CPU time over ``--repeats`` epochs after one warm-up
epoch (CPU time is the steadier figure on a busy machine), the time per round, one test-set
evaluation, and the estimate of a 60-epoch cell (60 epochs; the evaluations once an epoch are
inside the epoch time). ``--eval-every 1 --record-signs`` reproduces the old schedule (an
evaluation after every round, the sign statistics every round) for comparison; ``--profile``
prints cProfile's top functions of one epoch.

The epochs are timed with ``robustagg.bench``'s ``median_time`` (``robustagg bench`` is the
benchmark entry point); what this script adds is the trainer, which ``robustagg bench`` does
not run.

Usage::

    python benchmarks/bench_trainer.py                          # Fashion-MNIST, Mean, MLP
    python benchmarks/bench_trainer.py --rule signguard_sim --attack lie
    python benchmarks/bench_trainer.py --eval-every 1 --record-signs   # the old per-round costs
    python benchmarks/bench_trainer.py --dataset digits --repeats 10
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout


def _timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rule", default="mean")
    p.add_argument("--attack", default="none")
    p.add_argument("--model", default="mlp", choices=("mlp", "logreg"))
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--eval-every", type=int, default=None, help="rounds between evaluations (default: an epoch)"
    )
    p.add_argument("--record-signs", action="store_true", help="also record the sign statistics (fig2)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--threads", type=int, default=1, help="Numba/BLAS threads (the experiment uses 1)")
    p.add_argument("--profile", action="store_true", help="cProfile one epoch")
    args = p.parse_args(argv)

    import numba
    from threadpoolctl import threadpool_limits

    from robustagg.bench import median_time
    from robustagg.training import load_dataset, run_federated
    from robustagg.training.models import make_model

    data, wall, cpu = _timed(lambda: load_dataset(args.dataset, seed=0, data_dir=args.data_dir))
    fp, fp_wall, _ = _timed(lambda: data.fingerprint)
    print(f"dataset {data!r}, {data.X_train.dtype}: loaded in {wall:.2f} s wall ({cpu:.2f} s CPU)")
    print(f"content hash {fp} in {fp_wall:.2f} s")

    kw = dict(
        rule=args.rule,
        attack=args.attack,
        model=args.model,
        n_clients=args.clients,
        batch_size=args.batch_size,
        lr=0.1,
        epochs=1,
        eval_every=args.eval_every,
        record_signs=args.record_signs,
    )
    old_threads = numba.get_num_threads()
    numba.set_num_threads(args.threads)
    try:
        with threadpool_limits(args.threads):
            # one warm-up epoch (compilation, caches), then the timed epochs (robustagg bench's timing)
            ew, walls, res, ec = median_time(
                lambda: run_federated(data, **kw), repeats=args.repeats, warmup=1
            )
            model = make_model(args.model, data.n_features, data.n_classes, dtype=data.X_train.dtype)
            theta = res.theta
            _, ev_wall, ev_cpu = _timed(lambda: model.evaluate(theta, data.X_test, data.y_test))
            if args.profile:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.runcall(run_federated, data, **kw)
                pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    finally:
        numba.set_num_threads(old_threads)

    rounds = res.summary["rounds"]
    print(
        f"{args.rule}/{args.attack}, {args.model} (d = {res.summary['d']}), n = {args.clients}, batch "
        f"{args.batch_size}, {args.threads} thread(s): {rounds} rounds an epoch, "
        f"{len(res.history['round'])} evaluations"
    )
    print(
        f"epoch: {ew:.3f} s wall, {ec:.3f} s CPU (median of {args.repeats}; all: "
        + ", ".join(f"{w:.3f}" for w in walls)
        + f"); {1e3 * ew / rounds:.1f} ms a round"
    )
    print(f"one test-set evaluation: {1e3 * ev_wall:.0f} ms wall ({1e3 * ev_cpu:.0f} ms CPU)")
    print(f"60-epoch cell estimate: {60 * ew:.0f} s wall ({60 * ec:.0f} s CPU) plus the load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
