"""fastconv's ``torch.library`` ops (``torch.ops.fastconv.*``), their plans and launchers."""
from fastconv.ops import conv2d as _conv2d_ops  # noqa: F401  (registers fastconv::conv2d*)
from fastconv.ops import conv_transpose2d as _conv_transpose2d_ops  # noqa: F401
from fastconv.ops import roi_align as _roi_align_ops  # noqa: F401  (fastconv::roi_align*)
from fastconv.ops import roi_pool as _roi_pool_ops  # noqa: F401  (fastconv::roi_pool*)
from fastconv.ops._runtime import INTERPRETING
from fastconv.ops.plan import ConvProblem, Plan, plan_conv2d

__all__ = ["INTERPRETING", "ConvProblem", "Plan", "plan_conv2d"]
