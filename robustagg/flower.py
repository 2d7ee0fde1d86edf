"""``robustagg.flower`` is :mod:`robustagg.integrations.flower`, under the name it had first.

Importing it imports that module and binds this name to the same module object, so
``import robustagg.flower`` and ``from robustagg.flower import ...`` keep working (and patching
either name patches both).
"""

import sys

from .integrations import flower as _module

sys.modules[__name__] = _module
