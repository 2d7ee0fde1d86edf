"""Datasets, split into train and test with a seed and standardised once at load.

* ``"digits"`` -- scikit-learn's bundled 8×8 handwritten digits (1797 samples, 64 features,
  10 classes): the default, it needs no download.
* ``"synthetic"`` -- :func:`sklearn.datasets.make_classification` (10 classes, 40 features,
  3000 samples by default).
* ``"fashion-mnist"`` and ``"mnist"`` -- the paper's data, read from the standard IDX files
  (:mod:`robustagg.training.idx`: where they are looked for, and every check), official
  60 000 / 10 000 split kept.
* a path to a local ``.npz`` holding either ``X`` and ``y`` (split here) or ``x_train``,
  ``y_train``, ``x_test``, ``y_test`` (Keras' MNIST/Fashion-MNIST layout, kept as given);
  images are flattened.
* user arrays, through :func:`from_arrays`.

Features are standardised with the training set's mean and standard deviation (constant
features get scale 1, so they stay exactly zero: the MLP's gradients for them are exact zeros,
as for the always-black border pixels of MNIST). Labels are mapped to ``0 .. C-1``.

Precision: unsigned-byte features (pixels) are scaled to [0, 1] and, like float32 features,
kept and standardised **in float32** (the statistics are accumulated in float64, the matrix is
standardised once, in place); the trainer's model then computes in float32, as the paper's
PyTorch code does. Every other input (digits, synthetic, float64 arrays) is float64.

Every problem with a dataset file -- missing, not a zip, truncated, pickled arrays, wrong
arrays, NaN -- is a :class:`DatasetError` (a ``ValueError``) whose message names the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Dataset", "DatasetError", "from_arrays", "load_dataset", "read_npz"]

BUILTIN_DATASETS = ("digits", "synthetic")
#: datasets read from IDX files (robustagg.training.idx)
IDX_DATASET_NAMES = ("fashion-mnist", "mnist")
#: every name ``load_dataset`` accepts besides a path to a ``.npz`` file
DATASET_NAMES = BUILTIN_DATASETS + IDX_DATASET_NAMES


class DatasetError(ValueError):
    """A dataset that cannot be used: the message names the file (or arrays) and the problem."""


@dataclass(frozen=True)
class Dataset:
    """Standardised train/test arrays.

    Attributes
    ----------
    name : str
    X_train, X_test : ndarray, shape (m, p), float64 or float32 (see the module docstring)
    y_train, y_test : ndarray of int64, shape (m,)
    n_classes : int
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    _fingerprint: list = field(default_factory=list, repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def fingerprint(self) -> str:
        """A hash of the arrays' content (not of the name or the file's path): 16 hex digits.

        Computed once (SHA-256 over the four arrays' shapes, dtypes and bytes, about 0.1-0.3 s
        for Fashion-MNIST) and kept. ``robustagg experiment`` keys its stored cells with it, so
        a changed file is never served a result computed on its old content.
        """
        if not self._fingerprint:
            h = hashlib.sha256()
            for a in (self.X_train, self.y_train, self.X_test, self.y_test):
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape};".encode())
                h.update(memoryview(a).cast("B"))
            h.update(str(self.n_classes).encode())
            self._fingerprint.append(h.hexdigest()[:16])
        return self._fingerprint[0]

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.X_train.shape}, test={self.X_test.shape}, "
            f"classes={self.n_classes})"
        )


def _standardise(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float64 features: new standardised arrays."""
    mu = X_train.mean(axis=0)
    sd = X_train.std(axis=0)
    sd = np.where(sd > 1e-12 * max(float(np.abs(X_train).max(initial=0.0)), 1.0), sd, 1.0)
    return (X_train - mu) / sd, (X_test - mu) / sd


_CHUNK_ELEMENTS = 1 << 19  # 4 MiB of float64 per block


def _standardise_float32_inplace(X_train: np.ndarray, X_test: np.ndarray) -> None:
    """float32 features (arrays this module owns): standardised in place, once.

    The mean and the standard deviation are accumulated in float64 over blocks of rows (two
    passes; no float64 copy of the matrix), then applied in float32. A constant column gets
    scale 1 and, its mean being one of its values exactly, stays exactly zero.
    """
    m, p = X_train.shape
    rows = max(1, min(m, _CHUNK_ELEMENTS // max(p, 1)))
    buf = np.empty((rows, p))  # one float64 block, reused: no temporary of the matrix's size
    total = np.zeros(p)
    amax = 0.0
    for i in range(0, m, rows):
        block = buf[: min(rows, m - i)]
        np.copyto(block, X_train[i : i + rows])
        total += block.sum(axis=0)
        np.abs(block, out=block)
        amax = max(amax, float(block.max()))
    mu = total / m
    ss = np.zeros(p)
    for i in range(0, m, rows):
        block = buf[: min(rows, m - i)]
        np.copyto(block, X_train[i : i + rows])
        block -= mu
        block *= block
        ss += block.sum(axis=0)
    sd = np.sqrt(ss / m)
    sd = np.where(sd > 1e-12 * max(amax, 1.0), sd, 1.0)
    mu32, inv32 = mu.astype(np.float32), (1.0 / sd).astype(np.float32)
    for X in (X_train, X_test):
        X -= mu32
        X *= inv32


def _feature_dtype(X: np.ndarray, what: str) -> np.dtype:
    if X.dtype.kind not in "buif":
        raise DatasetError(f"{what}: X must hold real numbers, got dtype {X.dtype}")
    return np.dtype(np.float32) if X.dtype in (np.uint8, np.float32) else np.dtype(np.float64)


def _as_xy(X, y, what: str, dtype: np.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 2:
        raise DatasetError(f"{what}: X must have one row per sample (at least 2-D), got shape {X.shape}")
    dtype = _feature_dtype(X, what) if dtype is None else dtype
    pixels = X.dtype == np.uint8
    X = X.reshape(X.shape[0], -1).astype(dtype)  # a new array: standardised in place below
    if pixels:
        X /= dtype.type(255)
    y = y.reshape(-1)
    if y.shape[0] != X.shape[0]:
        raise DatasetError(f"{what}: X has {X.shape[0]} samples but y has {y.shape[0]} labels")
    if y.dtype.kind not in "biuU":
        if y.dtype.kind != "f" or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DatasetError(f"{what}: y must hold integer class labels, got dtype {y.dtype}")
    if X.shape[0] < 2:
        raise DatasetError(f"{what}: need at least 2 samples, got {X.shape[0]}")
    if X.shape[1] == 0:
        raise DatasetError(f"{what}: X has no features (shape {X.shape})")
    if not pixels and not np.all(np.isfinite(X)):
        raise DatasetError(f"{what}: X holds NaN or Inf")
    return X, y


def from_arrays(
    X,
    y,
    X_test=None,
    y_test=None,
    *,
    test_size: float = 0.25,
    seed: int = 0,
    name: str = "arrays",
) -> Dataset:
    """A :class:`Dataset` from user arrays.

    Without ``X_test``/``y_test`` a stratified split of ``test_size`` is drawn with ``seed``.
    Unsigned-byte ``X`` (pixels) is scaled to [0, 1]; it and float32 ``X`` are kept and
    standardised in float32, anything else in float64 (module docstring). The caller's arrays
    are not modified.
    """
    X, y = _as_xy(X, y, name)
    if (X_test is None) != (y_test is None):
        raise DatasetError(f"{name}: give both X_test and y_test or neither")
    if X_test is None:
        from sklearn.model_selection import train_test_split

        if not 0.0 < float(test_size) < 1.0:
            raise ValueError(f"{name}: test_size must be in (0, 1), got {test_size}")
        _, counts = np.unique(y, return_counts=True)
        strat = y if counts.min() >= 2 else None
        try:
            X, X_test, y, y_test = train_test_split(
                X, y, test_size=test_size, random_state=seed, stratify=strat
            )
        except ValueError as exc:  # too few samples for the split (scikit-learn's words kept)
            raise DatasetError(
                f"{name}: cannot split {X.shape[0]} samples into train and test ({exc})"
            ) from None
    else:
        X_test, y_test = _as_xy(X_test, y_test, name, dtype=X.dtype)
        if X_test.shape[1] != X.shape[1]:
            raise DatasetError(f"{name}: train has {X.shape[1]} features, test has {X_test.shape[1]}")
    try:
        classes = np.unique(np.concatenate([y, y_test]))
    except TypeError:  # e.g. numbers and strings mixed between train and test
        raise DatasetError(
            f"{name}: y_train ({y.dtype}) and y_test ({y_test.dtype}) labels cannot be compared"
        ) from None
    if classes.size < 2:
        raise DatasetError(f"{name}: need at least 2 classes, got {classes.size}")
    y_tr = np.searchsorted(classes, y).astype(np.int64)
    y_te = np.searchsorted(classes, y_test).astype(np.int64)
    if X.dtype == np.float32:
        _standardise_float32_inplace(X, X_test)
        X_tr, X_te = X, X_test
    else:
        X_tr, X_te = _standardise(X, X_test)
    return Dataset(name, X_tr, y_tr, X_te, y_te, int(classes.size))


#: the array layouts a ``.npz`` may hold, in the order they are tried
NPZ_LAYOUTS = (
    ("x_train", "y_train", "x_test", "y_test"),
    ("X_train", "y_train", "X_test", "y_test"),
    ("X", "y"),
    ("x", "y"),
    ("data", "target"),
)


def read_npz(path: str, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of a ``.npz`` file, read eagerly and checked; every problem names the file.

    Parameters
    ----------
    path : str
    keys : tuple of str, optional
        The arrays to read; by default the first of :data:`NPZ_LAYOUTS` the file holds.

    Raises
    ------
    FileNotFoundError
        No such file.
    DatasetError
        Not a zip archive (or truncated), a damaged member, an array of Python objects (never
        unpickled), a member that is not a NumPy array, or none of the expected arrays.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset file {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise DatasetError(
            f"{path}: not a valid .npz file (no zip archive found: the file is truncated or not "
            "written by numpy.savez)"
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            if keys is None:
                keys = next((layout for layout in NPZ_LAYOUTS if set(layout) <= names), None)
                if keys is None:
                    raise DatasetError(
                        f"{path}: holds arrays {sorted(names)}; expected arrays 'X' and 'y', or "
                        "'x_train', 'y_train', 'x_test', 'y_test'"
                    )
            missing = [k for k in keys if k not in names]
            if missing:
                raise DatasetError(f"{path}: holds arrays {sorted(names)}; missing {', '.join(missing)}")
            arrays = {k: data[k] for k in keys}
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DatasetError(f"{path}: damaged .npz file ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DatasetError(
                f"{path}: holds an array of Python objects, which is never unpickled; save plain "
                "numeric arrays (numpy.savez with number arrays)"
            ) from None
        raise DatasetError(f"{path}: damaged .npz file ({exc})") from None
    for k, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise DatasetError(f"{path}: member {k!r} is not a NumPy array (.npy)")
    return arrays


def load_dataset(
    name: str,
    *,
    test_size: float = 0.25,
    seed: int = 0,
    n_samples: int = 3000,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Load a dataset by name or from a ``.npz`` file, split and standardised.

    Parameters
    ----------
    name : str
        ``"digits"``, ``"synthetic"``, ``"fashion-mnist"``, ``"mnist"`` or a path to a ``.npz``
        file (module docstring).
    test_size : float, default 0.25
        Fraction held out for testing (ignored when the data has its own test split).
    seed : int, default 0
        Seed of the split (and of the synthetic generator).
    n_samples : int, default 3000
        Size of the synthetic dataset.
    data_dir : str or path-like, optional
        Where to look first for ``"fashion-mnist"`` and ``"mnist"``
        (:func:`robustagg.training.idx.find_idx_dataset`).

    Raises
    ------
    FileNotFoundError
        A missing file, or a named dataset found nowhere (the message lists the places searched).
    DatasetError
        A file that cannot be used (the message names it and says what is wrong).
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return from_arrays(bunch.data, bunch.target, test_size=test_size, seed=seed, name="digits")
    if name == "synthetic":
        from sklearn.datasets import make_classification

        X, y = make_classification(
            n_samples=int(n_samples),
            n_features=40,
            n_informative=20,
            n_redundant=5,
            n_classes=10,
            n_clusters_per_class=1,
            class_sep=1.5,
            random_state=seed,
        )
        return from_arrays(X, y, test_size=test_size, seed=seed, name="synthetic")
    if name in IDX_DATASET_NAMES:
        from .idx import find_idx_dataset, load_idx_dataset

        return load_idx_dataset(find_idx_dataset(name, data_dir))
    if str(name).endswith(".npz"):
        path = os.fspath(name)
        arrays = read_npz(path)
        label = os.path.splitext(os.path.basename(path))[0]
        values = list(arrays.values())
        if len(values) == 4:
            data = from_arrays(*values, name=path)
        else:
            data = from_arrays(*values, test_size=test_size, seed=seed, name=path)
        return dataclasses.replace(data, name=label)
    raise ValueError(
        f"unknown dataset {name!r}; available: {', '.join(repr(n) for n in DATASET_NAMES)} "
        "or a path to a .npz file"
    )
