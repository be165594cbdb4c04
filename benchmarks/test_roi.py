"""RoIAlign (sampling_ratio 0 and 2) and RoIPool on detectron2's benchmark shape: input
1x512x256x256, 512 boxes, 7x7 output; fastconv against torchvision's kernels. See
conftest.py."""
import pytest

from fastconv.bench.cases import DIRECTIONS, DTYPES, LAYOUTS, roi_cases
from fastconv.bench.harness import dtype_name


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("case", roi_cases(), ids=lambda c: c.name)
def test_roi(run_variant, case, dtype, layout, direction, impl):
    run_variant(case, dtype, layout, direction, impl)
