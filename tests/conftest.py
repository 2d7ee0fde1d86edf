import os

# Numba's OpenMP threading layer spin-waits by default; on a machine busier than its cores each
# parallel kernel call then burns tens of milliseconds at barriers. Passive waiting must be set
# before libgomp loads, i.e. before numba, torch or scikit-learn are imported.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Numba compiles on first use: hypothesis deadlines would flag the compile, not the code.
# ROBUSTAGG_HYPOTHESIS_DERANDOMIZE=1 (set by .ci/run) draws the same examples on every run, so
# that CI checks the code and not the luck of the draw; local runs keep exploring new examples
# (a failure they find goes into the test as an explicit @example).
settings.register_profile(
    "robustagg",
    deadline=None,
    max_examples=int(os.environ.get("ROBUSTAGG_MAX_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=os.environ.get("ROBUSTAGG_HYPOTHESIS_DERANDOMIZE") == "1",
)
settings.load_profile("robustagg")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
