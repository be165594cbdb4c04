"""Peak throughput of the GPUs fastconv is tuned for, and the roofline floor of a case.

The floor of a case is the time it cannot beat on a GPU: max(FLOPs / peak FLOP/s, bytes / peak
bandwidth). The fraction of the floor a measurement reaches is floor / measured time (1.0: at
the roofline).

Peaks are the vendors' dense (no sparsity) figures:
* H100 SXM5: NVIDIA H100 Tensor Core GPU datasheet — 989.4 TFLOP/s FP16/BF16 tensor, 494.7 TF32
  tensor, 66.9 FP32 (non-tensor), 3.35 TB/s HBM3, 132 SMs.
* H100 PCIe: 756.5 / 378 / 51.2 TFLOP/s, 2.0 TB/s, 114 SMs.
* H200 SXM: the H100 SXM's compute, 4.8 TB/s HBM3e, 132 SMs.
* A100 SXM4 80GB: NVIDIA A100 datasheet — 312 TFLOP/s FP16/BF16 tensor, 156 TF32, 19.5 FP32,
  2.039 TB/s, 108 SMs.
float32 convolutions run with TF32 switched off by default (torch.backends.cudnn.allow_tf32
decides, as for torch), so their peak is the FP32 one unless ``tf32=True``.
"""
from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class GpuPeak:
    name: str
    arch: int               # compute capability, e.g. 90
    sms: int
    tflops_16: float        # FP16 / BF16 tensor cores, dense
    tflops_tf32: float      # TF32 tensor cores, dense
    tflops_32: float        # FP32 CUDA cores
    tbytes_per_s: float     # DRAM bandwidth, TB/s

    def peak_flops(self, dtype: torch.dtype, tf32: bool = False) -> float:
        if dtype in (torch.float16, torch.bfloat16):
            return self.tflops_16 * 1e12
        if dtype == torch.float32:
            return (self.tflops_tf32 if tf32 else self.tflops_32) * 1e12
        return self.tflops_32 / 2 * 1e12  # float64: no tensor-core path in fastconv

    @property
    def bandwidth(self) -> float:
        return self.tbytes_per_s * 1e12

    def floor_seconds(self, flops: float, nbytes: float, dtype: torch.dtype,
                      tf32: bool = False) -> float:
        """max(compute time at peak, memory time at peak bandwidth)."""
        return max(flops / self.peak_flops(dtype, tf32), nbytes / self.bandwidth)

    def bound(self, flops: float, nbytes: float, dtype: torch.dtype, tf32: bool = False) -> str:
        """"compute" or "memory": which side of the ridge point the case lies on."""
        compute = flops / self.peak_flops(dtype, tf32)
        return "compute" if compute >= nbytes / self.bandwidth else "memory"


GPUS = {
    "h100-sxm": GpuPeak("NVIDIA H100 SXM5", 90, 132, 989.4, 494.7, 66.9, 3.35),
    "h100-pcie": GpuPeak("NVIDIA H100 PCIe", 90, 114, 756.5, 378.0, 51.2, 2.0),
    "h200": GpuPeak("NVIDIA H200 SXM", 90, 132, 989.4, 494.7, 66.9, 4.8),
    "a100": GpuPeak("NVIDIA A100 SXM4 80GB", 80, 108, 312.0, 156.0, 19.5, 2.039),
}
# the GPU a static report assumes for an architecture
DEFAULT_FOR_ARCH = {90: "h100-sxm", 80: "a100"}


def gpu_for(device_name: Optional[str] = None, arch: Optional[int] = None) -> GpuPeak:
    """The peaks of a device by its name (torch.cuda.get_device_name), else of the default GPU
    of an architecture (sm_90: H100 SXM, sm_80: A100)."""
    if device_name:
        low = device_name.lower()
        if "h200" in low:
            return GPUS["h200"]
        if "h100" in low:
            return GPUS["h100-pcie" if "pcie" in low else "h100-sxm"]
        if "a100" in low:
            return GPUS["a100"]
    return GPUS[DEFAULT_FOR_ARCH.get(arch or 90, "h100-sxm")]
