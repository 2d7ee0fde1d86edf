"""A griffe extension for the API pages: functions whose docstring is built at import time.

SignGuard's three functions get their Parameters section from their options table
(``robustagg.rules._signguard_options.parameters_doc``), so their docstrings are assigned at
import and griffe's static analysis sees none (and hides the functions). For a function of the
package without a docstring in its source, this extension imports it and uses the runtime
``__doc__``.
"""

from __future__ import annotations

import inspect
from typing import Any

import griffe


class RuntimeDocstrings(griffe.Extension):
    """Fill a missing docstring of a ``robustagg`` function from the imported object."""

    def on_function_instance(self, *, node: Any, func: griffe.Function, agent: Any, **kwargs: Any) -> None:
        if func.docstring is not None or not func.path.startswith("robustagg."):
            return
        try:
            obj = griffe.dynamic_import(func.path)
        except ImportError:
            return
        doc = getattr(obj, "__doc__", None)
        if doc:
            func.docstring = griffe.Docstring(inspect.cleandoc(doc), parent=func, parser="numpy")
