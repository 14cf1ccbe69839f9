"""Where a run executes: the device, the precision, several processes (DDP), and the device's peak FLOP/s.

Precision: float32 on the CPU; on CUDA bf16 autocast by default (same exponent range as float32, so no loss
scaling), or fp16 autocast with a GradScaler (Micikevicius et al. 2018, "Mixed Precision Training").
Several devices: launch with `torchrun --nproc_per_node=N train.py ...` (one process per device, PyTorch
DistributedDataParallel; Li et al. 2020). Rank 0 alone writes files and prints.
"""
from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist

from minillm.recipe import CHOICES

DEVICES = CHOICES["device"]   # TrainConfig's own list

# Dense bf16/fp16 tensor-core peaks, FLOP/s, from NVIDIA's data sheets (no sparsity). MFU = achieved model
# FLOP/s / peak (Chowdhery et al. 2022, PaLM, appendix B).
GPU_PEAK_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
                  "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12,
                  "T4": 65e12}


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when available, else cpu. Asking for cuda without one is a user error (ValueError)."""
    if name not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but torch.cuda.is_available() is False "
                         "(no GPU, or a CPU-only PyTorch build); use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" -> bf16 on CUDA, fp32 on the CPU (bf16 matmuls on a CPU are far slower than fp32)."""
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"--precision {precision} needs CUDA; on the CPU minillm trains in fp32")
    return precision


def setup_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) for a plain `python train.py`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), world, local_rank


def peak_flops(device: torch.device) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from). CPU: a measured float32 matmul, on the threads torch uses."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():  # first match wins: "H100 PCIe" is listed before "H100"
            if key in name:
                return flops, f"{name}: data-sheet bf16 peak"
        return float("nan"), f"{name}: not in the peak table, MFU not shown"
    # subtle: not torch.randn: drawing from the global generator here would shift every later dropout mask
    # of a resumed run (the RNG state was just restored) and break the exact resume.
    n, reps, a = 512, 0, torch.full((512, 512), 0.5)
    start = time.perf_counter()
    while time.perf_counter() - start < 0.2:
        a @ a  # noqa: B018  (the product itself is the measurement)
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - start), f"CPU, measured fp32 matmul on {torch.get_num_threads()} threads"
