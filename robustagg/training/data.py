"""Datasets that need no download, split into train and test with a seed.

* ``"digits"`` -- scikit-learn's bundled 8×8 handwritten digits (1797 samples, 64 features,
  10 classes): the stand-in for MNIST.
* ``"synthetic"`` -- :func:`sklearn.datasets.make_classification` (10 classes, 40 features,
  3000 samples by default).
* a path to a local ``.npz`` holding either ``X`` and ``y`` (split here) or ``x_train``,
  ``y_train``, ``x_test``, ``y_test`` (Keras' MNIST/Fashion-MNIST layout, kept as given);
  images are flattened.
* user arrays, through :func:`from_arrays`.

Features are standardised with the training set's mean and standard deviation (constant
features get scale 1, so they stay exactly zero: the MLP's gradients for them are exact zeros,
as for the always-black border pixels of MNIST). Labels are mapped to ``0 .. C-1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "from_arrays", "load_dataset"]

BUILTIN_DATASETS = ("digits", "synthetic")


@dataclass(frozen=True)
class Dataset:
    """Standardised train/test arrays.

    Attributes
    ----------
    name : str
    X_train, X_test : ndarray, shape (m, p), float64
    y_train, y_test : ndarray of int64, shape (m,)
    n_classes : int
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={self.X_train.shape}, test={self.X_test.shape}, "
            f"classes={self.n_classes})"
        )


def _standardise(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = X_train.mean(axis=0)
    sd = X_train.std(axis=0)
    sd = np.where(sd > 1e-12 * max(float(np.abs(X_train).max(initial=0.0)), 1.0), sd, 1.0)
    return (X_train - mu) / sd, (X_test - mu) / sd


def _as_xy(X, y, what: str) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim < 2:
        raise ValueError(f"{what}: X must have one row per sample (at least 2-D), got shape {X.shape}")
    X = X.reshape(X.shape[0], -1).astype(np.float64)
    y = y.reshape(-1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"{what}: X has {X.shape[0]} samples but y has {y.shape[0]} labels")
    if X.shape[0] < 2:
        raise ValueError(f"{what}: need at least 2 samples, got {X.shape[0]}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{what}: X holds NaN or Inf")
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
    """
    X, y = _as_xy(X, y, name)
    if (X_test is None) != (y_test is None):
        raise ValueError(f"{name}: give both X_test and y_test or neither")
    if X_test is None:
        from sklearn.model_selection import train_test_split

        if not 0.0 < float(test_size) < 1.0:
            raise ValueError(f"{name}: test_size must be in (0, 1), got {test_size}")
        _, counts = np.unique(y, return_counts=True)
        strat = y if counts.min() >= 2 else None
        X, X_test, y, y_test = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=strat)
    else:
        X_test, y_test = _as_xy(X_test, y_test, name)
        if X_test.shape[1] != X.shape[1]:
            raise ValueError(f"{name}: train has {X.shape[1]} features, test has {X_test.shape[1]}")
    classes = np.unique(np.concatenate([y, y_test]))
    if classes.size < 2:
        raise ValueError(f"{name}: need at least 2 classes, got {classes.size}")
    y_tr = np.searchsorted(classes, y).astype(np.int64)
    y_te = np.searchsorted(classes, y_test).astype(np.int64)
    X_tr, X_te = _standardise(X, X_test)
    return Dataset(name, X_tr, y_tr, X_te, y_te, int(classes.size))


def load_dataset(
    name: str,
    *,
    test_size: float = 0.25,
    seed: int = 0,
    n_samples: int = 3000,
) -> Dataset:
    """Load ``"digits"``, ``"synthetic"`` or a local ``.npz`` file, split and standardised.

    Parameters
    ----------
    name : str
        ``"digits"``, ``"synthetic"`` or a path to a ``.npz`` file.
    test_size : float, default 0.25
        Fraction held out for testing (ignored when the file has its own test split).
    seed : int, default 0
        Seed of the split (and of the synthetic generator).
    n_samples : int, default 3000
        Size of the synthetic dataset.
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
    if str(name).endswith(".npz"):
        if not os.path.isfile(name):
            raise FileNotFoundError(f"dataset file {name!r} does not exist")
        with np.load(name, allow_pickle=False) as data:
            keys = set(data.files)
            label = os.path.splitext(os.path.basename(name))[0]
            if {"x_train", "y_train", "x_test", "y_test"} <= keys:
                return from_arrays(
                    data["x_train"], data["y_train"], data["x_test"], data["y_test"], name=label
                )
            if {"X_train", "y_train", "X_test", "y_test"} <= keys:
                return from_arrays(
                    data["X_train"], data["y_train"], data["X_test"], data["y_test"], name=label
                )
            for xk, yk in (("X", "y"), ("x", "y"), ("data", "target")):
                if {xk, yk} <= keys:
                    return from_arrays(data[xk], data[yk], test_size=test_size, seed=seed, name=label)
        raise ValueError(
            f"dataset file {name!r} holds {sorted(keys)}; expected arrays 'X' and 'y', or "
            "'x_train', 'y_train', 'x_test', 'y_test'"
        )
    raise ValueError(f"unknown dataset {name!r}; use 'digits', 'synthetic' or a path to a .npz file")
