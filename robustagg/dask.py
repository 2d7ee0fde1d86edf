"""``robustagg.dask`` is :mod:`robustagg.integrations.dask`, under the name it had first.

Importing it imports that module and binds this name to the same module object, so
``import robustagg.dask`` and ``from robustagg.dask import ...`` keep working (and patching
either name patches both).
"""

import sys

from .integrations import dask as _module

sys.modules[__name__] = _module
