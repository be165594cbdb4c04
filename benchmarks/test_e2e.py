"""Whole models at 224x224: ResNet-50 and MobileNetV2, inference and one training step (forward,
backward, SGD step), fastconv's model against the same weights in torch's layers. See
conftest.py."""
import pytest

from fastconv.bench.cases import BATCHES, DTYPES, LAYOUTS
from fastconv.bench.harness import E2E_MODELS, E2E_MODES, E2ECase, dtype_name
from fastconv.models import default_input_size

CASES = [E2ECase(name, n, default_input_size(name)) for name in E2E_MODELS for n in BATCHES]


@pytest.mark.parametrize("mode", E2E_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_e2e(run_variant, case, dtype, layout, mode, impl):
    run_variant(case, dtype, layout, mode, impl)
