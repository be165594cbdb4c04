"""The RoI family: ops (``align_op``: roi_align; ``pool_op``: roi_pool) and the seam that
describes their launches (``launch``)."""
