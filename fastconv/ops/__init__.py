"""What every op family shares: registration (``registry``), the per-signature call cache
(``launch_cache``), autocast rules (``autocast``), devices and allocation (``_runtime``).

The ops themselves live with their kernel family: :mod:`fastconv.conv` (conv2d, its gradients,
conv_transpose2d) and :mod:`fastconv.roi` (roi_align, roi_pool); importing ``fastconv``
registers them all as ``torch.ops.fastconv.*``.
"""
from fastconv.ops._runtime import INTERPRETING
from fastconv.conv.plan import ConvProblem, Plan, plan_conv2d

__all__ = ["INTERPRETING", "ConvProblem", "Plan", "plan_conv2d"]
