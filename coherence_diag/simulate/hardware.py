"""Accelerator and model catalogue, and the roofline formulas that turn tokens into time.

The numbers are public datasheet figures (dense BF16/FP16 tensor throughput, HBM/GDDR
bandwidth, board power). The formulas are the usual first-order LLM-serving roofline:
prefill is compute-bound (FLOPs / achieved FLOP rate), decode is memory-bound (every step
reads the weights plus the resident KV cache once).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Accelerator:
    name: str
    peak_tflops: float  # dense BF16 tensor TFLOP/s
    mem_bw_gbs: float  # peak memory bandwidth, GB/s
    mem_gb: float  # device memory, GB
    idle_w: float
    tdp_w: float
    prefill_mfu: float = 0.45  # achieved fraction of peak FLOPs in prefill
    bw_eff: float = 0.85  # achieved fraction of peak bandwidth in decode


ACCELERATORS: dict[str, Accelerator] = {
    "H100-SXM": Accelerator("H100-SXM", 989.0, 3350.0, 80.0, 90.0, 700.0),
    "A100-40GB": Accelerator("A100-40GB", 312.0, 1555.0, 40.0, 55.0, 400.0),
    "L40S": Accelerator("L40S", 362.0, 864.0, 48.0, 40.0, 350.0),
    # Lower achieved MFU: less mature kernels for this model on ROCm.
    "MI300X": Accelerator("MI300X", 1307.0, 5300.0, 192.0, 150.0, 750.0, prefill_mfu=0.35),
}


@dataclass(frozen=True)
class Model:
    name: str = "llama-3-8b"
    params: float = 8.0e9
    n_layers: int = 32
    d_model: int = 4096
    weight_bytes: float = 16.0e9  # BF16
    kv_bytes_per_token: int = 131_072  # 2 (K,V) x 32 layers x 8 KV heads x 128 dim x 2 bytes


PREFILL_OVERHEAD_MS = 4.0  # launch, tokenizer hand-off, sampling of the first token
DECODE_OVERHEAD_MS = 1.5  # per-step CPU scheduling and kernel launch
DECODE_MFU = 0.5
MEM_USABLE_FRAC = 0.9  # what the serving engine may allocate (gpu_memory_utilization)


def prefill_ms(acc: Accelerator, model: Model, prompt_tokens: float) -> float:
    """Nominal prefill time: linear GEMM FLOPs plus the quadratic attention term."""
    flops = 2.0 * model.params * prompt_tokens + 4.0 * model.n_layers * model.d_model * prompt_tokens**2
    return PREFILL_OVERHEAD_MS + flops / (acc.peak_tflops * 1e12 * acc.prefill_mfu) * 1e3


def decode_step_ms(acc: Accelerator, model: Model, batch: float, kv_read_bytes: float = 0.0) -> float:
    """One decode step: read weights + resident KV at achieved bandwidth, plus GEMV FLOPs."""
    mem_ms = (model.weight_bytes + kv_read_bytes) / (acc.mem_bw_gbs * 1e9 * acc.bw_eff) * 1e3
    flop_ms = 2.0 * model.params * batch / (acc.peak_tflops * 1e12 * DECODE_MFU) * 1e3
    return DECODE_OVERHEAD_MS + mem_ms + flop_ms


def kv_capacity_bytes(acc: Accelerator, model: Model) -> float:
    return max(acc.mem_gb * 1e9 * MEM_USABLE_FRAC - model.weight_bytes, 1e9)
