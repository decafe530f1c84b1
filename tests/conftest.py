"""Shared test set-up: hypothesis settings and the backend under test.

MINILM_BACKEND=cupy runs the whole suite on the GPU; tests that need NumPy-only behaviour
say so. MINILM_REQUIRE_ORACLES=1 (CI) turns a missing oracle package into a failure.
Hypothesis runs derandomized by default so CI is reproducible; set
MINILM_HYPOTHESIS=explore to search with fresh random seeds.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from .helpers import oracle, oracles_required

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=20,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("explore", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("explore" if os.environ.get("MINILM_HYPOTHESIS") == "explore" else "ci")

if oracles_required():
    # CI (MINILM_REQUIRE_ORACLES=1): a test that asks pytest.importorskip for an oracle directly,
    # instead of through tests.helpers.oracle, fails just the same when the oracle is missing.
    def _importorskip_requiring_oracles(modname, minversion=None, reason=None, **_):
        return oracle(modname, reason=reason, minversion=minversion)

    pytest.importorskip = _importorskip_requiring_oracles


@pytest.fixture(autouse=True)
def _seed_everything():
    import minilm as ml

    ml.manual_seed(0)
    np.random.seed(0)
    yield
