"""The convolution family: ops (``op``: conv2d, its fused epilogue and gradients;
``transpose_op``: conv_transpose2d), the seam that describes their launches (``launch``, and
``tma_launch`` for the TMA forward), the plan (``plan``), autotuning (``autotune``) and the shape
rules shared with the fake kernels (``shapes``)."""
