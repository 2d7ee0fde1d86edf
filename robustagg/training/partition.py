"""Splitting a training set among clients: IID, and the paper's non-IID scheme.

Non-IID (the paper's Section VI-B, after McMahan et al.): a random fraction ``s`` of the
samples is spread evenly over the clients (IID part); the remaining ``1 - s`` are sorted by
label, cut into ``shards_per_client · n`` contiguous shards of (almost) equal size, and every
client receives ``shards_per_client`` distinct shards at random. Smaller ``s`` means more skew;
``s = 1`` is IID. Every sample goes to exactly one client.
"""

from __future__ import annotations

import numpy as np

__all__ = ["iid_partition", "noniid_partition", "partition", "partition_label"]


def _check(y: np.ndarray, n_clients: int) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if isinstance(n_clients, bool) or int(n_clients) != n_clients or n_clients < 1:
        raise ValueError(f"partition: n_clients must be a positive integer, got {n_clients!r}")
    if y.size < n_clients:
        raise ValueError(f"partition: {y.size} samples cannot give every one of {n_clients} clients a sample")
    return y


def iid_partition(y, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A random permutation of the sample indices cut into ``n_clients`` near-equal parts."""
    y = _check(y, n_clients)
    perm = rng.permutation(y.size)
    return [np.sort(part) for part in np.array_split(perm, n_clients)]


def noniid_partition(
    y,
    n_clients: int,
    s: float,
    rng: np.random.Generator,
    *,
    shards_per_client: int = 2,
) -> list[np.ndarray]:
    """The paper's non-IID split: fraction ``s`` IID, the rest in label-sorted shards.

    Parameters
    ----------
    y : array_like of int, shape (m,)
        Labels of the training samples.
    n_clients : int
    s : float in [0, 1]
        Fraction of the samples spread IID.
    rng : numpy.random.Generator
    shards_per_client : int, default 2

    Returns
    -------
    list of ndarray
        The sorted sample indices of each client; together a partition of ``range(m)``.
    """
    y = _check(y, n_clients)
    if not 0.0 <= float(s) <= 1.0:
        raise ValueError(f"partition: the IID fraction s must be in [0, 1], got {s}")
    m = y.size
    perm = rng.permutation(m)
    n_iid = int(round(float(s) * m))
    iid_idx, rest = perm[:n_iid], perm[n_iid:]
    parts = [list(p) for p in np.array_split(iid_idx, n_clients)]
    if rest.size:
        n_shards = shards_per_client * n_clients
        # sort by label; the random permutation above breaks ties randomly (stable sort)
        rest = rest[np.argsort(y[rest], kind="stable")]
        shards = np.array_split(rest, n_shards)
        order = rng.permutation(n_shards)
        for c in range(n_clients):
            for k in order[c * shards_per_client : (c + 1) * shards_per_client]:
                parts[c].extend(shards[k])
    out = [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    if min(p.size for p in out) == 0:
        raise ValueError(f"partition: {m} samples are too few for {n_clients} clients with s = {s}")
    return out


def partition(y, n_clients: int, *, scheme: str = "iid", s: float = 1.0, rng=None) -> list[np.ndarray]:
    """``scheme="iid"`` or ``"noniid"`` (with IID fraction ``s``)."""
    rng = np.random.default_rng(rng)
    if scheme == "iid":
        return iid_partition(y, n_clients, rng)
    if scheme == "noniid":
        return noniid_partition(y, n_clients, s, rng)
    raise ValueError(f"partition: unknown scheme {scheme!r}; available: iid, noniid")


def partition_label(scheme: str, s: float) -> str:
    """The ``partition`` column of ``results.csv``: ``"iid"`` or ``"noniid(s=0.5)"``."""
    return "iid" if scheme == "iid" else f"noniid(s={s:g})"
