"""conv2d (every distinct layer of the five models, depthwise apart), conv1d and
conv_transpose2d: fastconv against torch with cudnn.benchmark (and PyTorch's native depthwise
kernel). See conftest.py."""
import pytest

from fastconv.bench.cases import DIRECTIONS, DTYPES, LAYOUTS, ConvCase, all_cases
from fastconv.bench.harness import dtype_name

CASES = [c for c in all_cases() if isinstance(c, ConvCase)]


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_conv(run_variant, case, dtype, layout, direction, impl):
    run_variant(case, dtype, layout, direction, impl)
