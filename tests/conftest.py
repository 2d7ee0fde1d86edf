import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Numba compiles on first use: hypothesis deadlines would flag the compile, not the code.
settings.register_profile(
    "robustagg",
    deadline=None,
    max_examples=int(os.environ.get("ROBUSTAGG_MAX_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("robustagg")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
