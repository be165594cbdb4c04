"""Measuring fastconv: the GPU timing harness and the static compile report.

The compile report (:mod:`fastconv.bench.compile_report`) needs no GPU: it builds every kernel
variant the dispatcher can launch for sm_90 and sm_80 with the ptxas that ships inside Triton,
so register spills and missing tensor-core instructions show up on any machine.
"""
