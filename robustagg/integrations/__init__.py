"""Integrations with other frameworks, each behind an optional extra and imported only when used:

* :mod:`robustagg.integrations.flower` (``[flower]``): Flower strategies that aggregate with any
  rule (also importable as ``robustagg.flower``);
* :mod:`robustagg.integrations.dask` (``[dask]``): the rules on Dask arrays chunked along d (also
  ``robustagg.dask``).

Array libraries (PyTorch, JAX, CuPy, anything with ``__array__`` or DLPack) need no integration
module: every rule converts its input and returns the caller's kind of array
(``robustagg._array``).
"""
