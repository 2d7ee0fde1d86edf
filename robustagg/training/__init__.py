"""The tiny built-in federated-learning trainer (NumPy only).

* :mod:`~robustagg.training.models` -- multinomial logistic regression and a one-hidden-layer
  ReLU MLP with flat parameter vectors and batched per-client gradients;
* :mod:`~robustagg.training.data` -- digits, a synthetic generator, Fashion-MNIST/MNIST, user
  arrays or a ``.npz``;
* :mod:`~robustagg.training.idx` -- the validated reader of the MNIST/Fashion-MNIST IDX files
  and where they are looked for;
* :mod:`~robustagg.training.partition` -- IID and the paper's non-IID split;
* :mod:`~robustagg.training.federated` -- the training loop with any rule and any attack;
* :mod:`~robustagg.training.experiment` -- the paper's experiments (``robustagg experiment``):
  the command line; its presets and cells (:mod:`~robustagg.training.presets`), running them
  (:mod:`~robustagg.training.runner`), ``results.csv`` and the tables
  (:mod:`~robustagg.training.tables`), the figures (:mod:`~robustagg.training.plots`) and the
  statistics of finished cells both use (:mod:`~robustagg.training.results`).
"""

from .data import Dataset, DatasetError, from_arrays, load_dataset
from .federated import FederatedConfig, FederatedResult, run_federated, sign_fractions
from .models import MLP, LogisticRegression, make_model
from .partition import iid_partition, noniid_partition, partition

__all__ = [
    "MLP",
    "Dataset",
    "DatasetError",
    "FederatedConfig",
    "FederatedResult",
    "LogisticRegression",
    "from_arrays",
    "iid_partition",
    "load_dataset",
    "make_model",
    "noniid_partition",
    "partition",
    "run_federated",
    "sign_fractions",
]
