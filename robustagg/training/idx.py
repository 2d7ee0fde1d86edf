"""MNIST and Fashion-MNIST from their standard IDX files, gzipped or not, with every check.

The IDX format (LeCun's MNIST page): two zero bytes, a data-type code (``0x08`` unsigned byte,
``0x09`` signed byte, ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the
number of dimensions, each dimension as a big-endian uint32, then the values, big-endian, in C
order. :func:`read_idx` checks each of these and that the file holds exactly the declared
number of bytes; every problem is an :class:`IDXError` (a ``ValueError``) that names the file.

A dataset is four files::

    train-images-idx3-ubyte  train-labels-idx1-ubyte  t10k-images-idx3-ubyte  t10k-labels-idx1-ubyte

each optionally gzipped (``.gz``: recognised by its content, not its name). Images must be 3-D
unsigned bytes with the same height and width in train and test, labels 1-D unsigned bytes with
one label per image; the sizes are not fixed (60 000 / 10 000 for the real data; any counts for a
user's files).

:func:`find_idx_dataset` looks for the files, in this order (the first place holding all four
wins; a damaged file there is an error, not a reason to look further):

1. ``data_dir`` (``--data-dir``), then ``$ROBUSTAGG_DATA``; in each ``ROOT``: ``ROOT/<name>/``,
   torchvision's ``ROOT/FashionMNIST/raw/`` (``ROOT/MNIST/raw/``), ``ROOT/`` itself, and for
   MNIST Keras' ``ROOT/mnist.npz``;
2. Debian's ``/usr/share/datasets/<name>/`` (``apt-get install dataset-fashion-mnist``);
3. Keras' cache, ``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``): ``fashion-mnist/``
   with the four ``.gz`` files; ``mnist.npz`` for MNIST;
4. torchvision's layout under ``./data`` (the ``root="data"`` of PyTorch's tutorials), relative
   to the working directory: ``data/FashionMNIST/raw/``, ``data/MNIST/raw/``.

:func:`load_idx_dataset` turns the files into a :class:`~robustagg.training.data.Dataset`: pixels
scaled to [0, 1] and standardised once, in float32, with the training set's statistics.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .data import DatasetError

__all__ = [
    "IDX_DATASETS",
    "IDX_FILES",
    "DataSource",
    "IDXError",
    "find_idx_dataset",
    "load_idx_dataset",
    "read_idx",
]

#: type code -> (big-endian dtype, name)
IDX_TYPES: dict[int, tuple[str, str]] = {
    0x08: (">u1", "unsigned byte"),
    0x09: (">i1", "signed byte"),
    0x0B: (">i2", "int16"),
    0x0C: (">i4", "int32"),
    0x0D: (">f4", "float32"),
    0x0E: (">f8", "float64"),
}

#: the four files of a dataset, by role
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: dataset name -> (torchvision's folder, Keras' cache entry, Debian package or None)
IDX_DATASETS: dict[str, tuple[str, str, str | None]] = {
    "fashion-mnist": ("FashionMNIST", "fashion-mnist", "dataset-fashion-mnist"),
    "mnist": ("MNIST", "mnist.npz", None),
}

_GZIP_MAGIC = b"\x1f\x8b"
#: where Debian's dataset packages put their files (``/usr/share/datasets/<name>/``)
DEBIAN_ROOT = "/usr/share/datasets"


class IDXError(DatasetError):
    """An IDX file (or Keras' ``mnist.npz``) that is damaged or not in the expected layout."""


def _read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it is a gzip file (recognised by its first two bytes)."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise IDXError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise IDXError(f"{path}: truncated gzip file (the compressed stream ends early)") from None
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise IDXError(f"{path}: damaged gzip file ({exc})") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped or not) into an array of its declared shape and type.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    ndarray
        In native byte order; unsigned bytes are a read-only view of the file's bytes.

    Raises
    ------
    IDXError
        When the file cannot be read, is not an IDX file (magic number), has an unknown type
        code, no dimensions, or does not hold exactly the number of bytes its header declares
        (truncated, or with bytes left over).
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: {len(data)} bytes, too short for an IDX header (4 bytes at least)")
    if data[0] != 0 or data[1] != 0:
        raise IDXError(
            f"{path}: not an IDX file: it starts with bytes 0x{data[0]:02x} 0x{data[1]:02x}, "
            "an IDX file with 0x00 0x00 (then a type code and the number of dimensions)"
        )
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02x} {name}" for c, (_, name) in IDX_TYPES.items())
        raise IDXError(f"{path}: unknown IDX data type code 0x{code:02x} (known: {known})")
    if ndim == 0:
        raise IDXError(f"{path}: the IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header} bytes, the file holds {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    dtype = np.dtype(IDX_TYPES[code][0])
    expected = dtype.itemsize
    for s in shape:
        expected *= s
    held = len(data) - header
    if held < expected:
        raise IDXError(
            f"{path}: truncated: the header declares shape {shape} of {IDX_TYPES[code][1]} "
            f"({expected} bytes of data), the file holds {held}"
        )
    if held > expected:
        raise IDXError(
            f"{path}: {held - expected} bytes after the data that the header declares "
            f"(shape {shape} of {IDX_TYPES[code][1]}, {expected} bytes): wrong dimensions or not an IDX file"
        )
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=header).reshape(shape)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class DataSource:
    """Where a named dataset was found.

    Attributes
    ----------
    name : str
        ``"fashion-mnist"`` or ``"mnist"``.
    kind : {"idx", "keras-npz"}
    paths : dict
        ``kind == "idx"``: the four files by role (:data:`IDX_FILES`' keys);
        ``"keras-npz"``: ``{"npz": path}``.
    where : str
        The place, in words (for messages).
    """

    name: str
    kind: str
    paths: Mapping[str, str] = field(default_factory=dict)
    where: str = ""


def _idx_files_in(directory: str) -> tuple[dict[str, str], list[str]]:
    """The four files found in ``directory`` (raw preferred over .gz) and the names missing."""
    found, missing = {}, []
    for role, base in IDX_FILES.items():
        for candidate in (base, base + ".gz"):
            p = os.path.join(directory, candidate)
            if os.path.isfile(p):
                found[role] = p
                break
        else:
            missing.append(base)
    return found, missing


def _candidates(name: str, data_dir: str | None, environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """``(kind, path, label)`` in the order they are searched."""
    torch_dir, keras_entry, _ = IDX_DATASETS[name]
    out: list[tuple[str, str, str]] = []
    roots = []
    if data_dir:
        roots.append((os.path.expanduser(str(data_dir)), "--data-dir"))
    if environ.get("ROBUSTAGG_DATA"):
        roots.append((os.path.expanduser(environ["ROBUSTAGG_DATA"]), "$ROBUSTAGG_DATA"))
    for root, label in roots:
        out.append(("idx", os.path.join(root, name), label))
        out.append(("idx", os.path.join(root, torch_dir, "raw"), f"{label}, torchvision layout"))
        out.append(("idx", root, label))
        if keras_entry.endswith(".npz"):
            out.append(("keras-npz", os.path.join(root, keras_entry), f"{label}, Keras layout"))
    out.append(("idx", os.path.join(DEBIAN_ROOT, name), "Debian"))
    home = os.path.expanduser("~")
    keras = os.path.join(environ.get("KERAS_HOME") or os.path.join(home, ".keras"), "datasets")
    out.append(
        (
            "keras-npz" if keras_entry.endswith(".npz") else "idx",
            os.path.join(keras, keras_entry),
            "Keras cache",
        )
    )
    out.append(("idx", os.path.abspath(os.path.join("data", torch_dir, "raw")), "torchvision layout, ./data"))
    return out


def find_idx_dataset(
    name: str, data_dir: str | os.PathLike | None = None, *, environ: Mapping[str, str] | None = None
) -> DataSource:
    """Find the files of ``"fashion-mnist"`` or ``"mnist"`` (the search order is the module's).

    Parameters
    ----------
    name : {"fashion-mnist", "mnist"}
    data_dir : str or path-like, optional
        Searched first (the CLI's ``--data-dir``).
    environ : mapping, optional
        The environment to read ``ROBUSTAGG_DATA`` and ``KERAS_HOME`` from (default ``os.environ``).

    Raises
    ------
    FileNotFoundError
        When no place holds the dataset; the message lists every place searched and how to
        install the files.
    """
    if name not in IDX_DATASETS:
        raise ValueError(f"unknown IDX dataset {name!r}; available: {', '.join(IDX_DATASETS)}")
    environ = os.environ if environ is None else environ
    if data_dir is not None and not os.path.isdir(os.fspath(data_dir)):
        raise FileNotFoundError(f"{name}: --data-dir {os.fspath(data_dir)!r} is not a directory")
    searched = []
    for kind, path, label in _candidates(name, None if data_dir is None else os.fspath(data_dir), environ):
        if kind == "keras-npz":
            if os.path.isfile(path):
                return DataSource(name, kind, {"npz": path}, f"{path} ({label})")
            searched.append(f"  {path} ({label})")
            continue
        if not os.path.isdir(path):
            searched.append(f"  {path}/ ({label})")
            continue
        found, missing = _idx_files_in(path)
        if not missing:
            return DataSource(name, "idx", found, f"{path}/ ({label})")
        note = f"; holds {len(found)} of the 4 files, lacks {', '.join(missing)}" if found else ""
        searched.append(f"  {path}/ ({label}{note})")
    torch_dir, _, package = IDX_DATASETS[name]
    install = (
        f"install Debian's package (`apt-get install {package}`, files in /usr/share/datasets/{name}/), or "
        if package
        else ""
    )
    raise FileNotFoundError(
        f"{name}: dataset not found. Searched, in order:\n"
        + "\n".join(searched)
        + f"\nTo use it, {install}put the four files {', '.join(IDX_FILES.values())} "
        "(each may be gzipped, .gz) in a directory and pass --data-dir DIR or set ROBUSTAGG_DATA=DIR "
        f"(DIR/{name}/ and torchvision's DIR/{torch_dir}/raw/ are searched too)."
    )


def _check_images(arr: np.ndarray, path: str) -> np.ndarray:
    if arr.dtype != np.uint8 or arr.ndim != 3:
        raise IDXError(
            f"{path}: expected images, a 3-D array of unsigned bytes (type code 0x08), "
            f"got {arr.ndim}-D {arr.dtype} of shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] * arr.shape[2] == 0:
        raise IDXError(f"{path}: no images (shape {arr.shape})")
    return arr


def _check_labels(arr: np.ndarray, path: str, n_images: int, images_path: str) -> np.ndarray:
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise IDXError(
            f"{path}: expected labels, a 1-D array of unsigned bytes (type code 0x08), "
            f"got {arr.ndim}-D {arr.dtype} of shape {arr.shape}"
        )
    if arr.shape[0] != n_images:
        raise IDXError(f"{path}: {arr.shape[0]} labels, but {images_path} holds {n_images} images")
    return arr


def read_idx_arrays(paths: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four files, read and checked: ``(train_images, train_labels, test_images, test_labels)``."""
    tr_x = _check_images(read_idx(paths["train_images"]), paths["train_images"])
    tr_y = _check_labels(
        read_idx(paths["train_labels"]), paths["train_labels"], len(tr_x), paths["train_images"]
    )
    te_x = _check_images(read_idx(paths["test_images"]), paths["test_images"])
    te_y = _check_labels(
        read_idx(paths["test_labels"]), paths["test_labels"], len(te_x), paths["test_images"]
    )
    if te_x.shape[1:] != tr_x.shape[1:]:
        raise IDXError(
            f"{paths['test_images']}: images of {te_x.shape[1]}x{te_x.shape[2]} pixels, but "
            f"{paths['train_images']} holds {tr_x.shape[1]}x{tr_x.shape[2]}"
        )
    return tr_x, tr_y, te_x, te_y


def _read_keras_npz(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from .data import read_npz

    arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    tr_x = _check_images(arrays["x_train"], f"{path} (x_train)")
    tr_y = _check_labels(arrays["y_train"], f"{path} (y_train)", len(tr_x), "x_train")
    te_x = _check_images(arrays["x_test"], f"{path} (x_test)")
    te_y = _check_labels(arrays["y_test"], f"{path} (y_test)", len(te_x), "x_test")
    if te_x.shape[1:] != tr_x.shape[1:]:
        raise IDXError(f"{path}: x_test images are {te_x.shape[1:]}, x_train images {tr_x.shape[1:]}")
    return tr_x, tr_y, te_x, te_y


def load_idx_dataset(source: DataSource):
    """A :class:`~robustagg.training.data.Dataset` from a :class:`DataSource`.

    Pixels are scaled to [0, 1] and standardised once, in float32, with the training set's
    mean and standard deviation (accumulated in float64); the official train/test split is kept.
    """
    from .data import from_arrays

    if source.kind == "keras-npz":
        tr_x, tr_y, te_x, te_y = _read_keras_npz(source.paths["npz"])
    else:
        tr_x, tr_y, te_x, te_y = read_idx_arrays(source.paths)
    return from_arrays(tr_x, tr_y, te_x, te_y, name=source.name)
