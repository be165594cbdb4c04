"""Measuring fastconv: the benchmark cases, the GPU timing harness and the static reports.

* :mod:`fastconv.bench.cases`: what is measured (every distinct conv layer of five models,
  depthwise, conv1d, conv_transpose2d, detectron2's RoI shape) with FLOPs and minimum bytes;
* :mod:`fastconv.bench.harness` / :mod:`fastconv.bench.run` (``fastconv bench``): timing on a
  GPU against cuDNN, PyTorch's depthwise kernel and torchvision, CSV and plot
  (:mod:`fastconv.bench.plot`); a dry mode runs the same path on tiny shapes in the interpreter;
* :mod:`fastconv.bench.compile_report` (``fastconv compile-report [--cases]``): no GPU needed;
  every tile config the plan may pick, or the launches of the benchmark cases, built for sm_90 /
  sm_80 with the ptxas inside Triton: compile errors, spills, tensor-core instructions and
  load widths show on any machine;
* :mod:`fastconv.bench.roofline`: the peaks of the GPUs, for the roofline floor.
"""
