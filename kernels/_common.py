"""Small ``@triton.jit`` helpers shared by the convolution kernels."""
import triton
import triton.language as tl


@triton.jit
def mma(a, b, acc, DOT_IN_FP32: tl.constexpr, ALLOW_TF32: tl.constexpr):
    """acc += a @ b on the tensor cores.

    DOT_IN_FP32 upcasts 16-bit operands first: the launcher sets it only under the Triton
    interpreter, whose ``tl.dot`` multiplies raw bfloat16 bit patterns. On a GPU the 16-bit
    operands go to the tensor cores as they are.
    """
    if DOT_IN_FP32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if ALLOW_TF32:
        acc = tl.dot(a, b, acc, input_precision="tf32")
    else:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    return acc


@triton.jit
def cast_index(x, INDEX_64: tl.constexpr):
    """Widen an index vector to int64 when some tensor has >= 2**31 elements."""
    if INDEX_64:
        x = x.to(tl.int64)
    return x
