"""The alias table of the `prometheus` and `dcgm` sources: engine and exporter metric names ->
where their samples go. Data only, one place; `prom_read.py` and the adapters read it.

Each entry names a metric as it is exposed (a counter with its `_total`, a histogram by its base
name: its `_bucket`/`_sum`/`_count` samples belong to it), optionally a label selector (Triton's
TensorRT-LLM backend puts several quantities in one family, told apart by a label), and:

- `gauge` -> a trace column: layer, column, and the factor that converts the exposed unit to the
  column's (percent -> fraction: 0.01; MiB -> bytes: 2^20);
- `counter` -> a windowed summary in the provenance (increases per window, counter resets
  handled): counts of events that name no request (preemptions) cannot become request rows;
- `histogram` -> a windowed summary in the provenance (count, mean, bucket-interpolated
  quantiles): latency distributions cannot become request rows.

Names checked against the sources: vLLM `vllm/v1/metrics/loggers.py` (labels `model_name`,
`engine`), SGLang `python/sglang/srt/metrics/collector.py`, Triton's metrics guide and the
TensorRT-LLM backend's `nv_trt_llm_*` families, `trtllm-serve` (`trtllm_*`), Dynamo's
observability docs (`dynamo_frontend_*`, `dynamo_component_kvstats_*`), and dcgm-exporter's
`etc/default-counters.csv` / `etc/dcp-metrics-included.csv`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram"]
MIB = float(2**20)


@dataclass(frozen=True)
class Alias:
    metric: str
    engine: str  # vllm, sglang, triton, tensorrt-llm, dynamo, dcgm
    kind: Kind
    layer: str | None = None  # gauges: the trace layer ...
    column: str | None = None  # ... and column they fill
    scale: float = 1.0  # exposed unit x scale / divisor = the column's unit
    divisor: float = 1.0  # (percent: / 100, exact in binary where x 0.01 is not)
    unit: str = ""  # the exposed unit, for notes and summaries
    select: tuple[tuple[str, str], ...] = ()  # label == value, all must hold
    note: str = ""

    @property
    def key(self) -> str:
        """The name shown in provenance: the metric with its selector."""
        if not self.select:
            return self.metric
        return self.metric + "{" + ",".join(f'{k}="{v}"' for k, v in self.select) + "}"


# A queue's length and the requests running beside it (extra column `running_requests`).
RUNNING = "running_requests"

ALIASES: tuple[Alias, ...] = (
    # --- vLLM (v1 engine; the v0 names that differ are kept for older deployments)
    Alias("vllm:num_requests_waiting", "vllm", "gauge", "queue", "depth", unit="requests"),
    Alias("vllm:num_requests_running", "vllm", "gauge", "queue", RUNNING, unit="requests"),
    Alias("vllm:kv_cache_usage_perc", "vllm", "gauge", "gpu", "kv_cache_util", unit="fraction",
          note="a fraction (1 = full) despite `perc` in its name"),
    Alias("vllm:gpu_cache_usage_perc", "vllm", "gauge", "gpu", "kv_cache_util", unit="fraction",
          note="the pre-v1 name of vllm:kv_cache_usage_perc; a fraction despite its name"),
    Alias("vllm:num_preemptions_total", "vllm", "counter", unit="preemptions",
          note="cumulative preemptions of the engine: counts, not requests (no request id)"),
    Alias("vllm:time_to_first_token_seconds", "vllm", "histogram", unit="s"),
    Alias("vllm:e2e_request_latency_seconds", "vllm", "histogram", unit="s"),
    Alias("vllm:request_queue_time_seconds", "vllm", "histogram", unit="s"),
    Alias("vllm:inter_token_latency_seconds", "vllm", "histogram", unit="s"),
    Alias("vllm:time_per_output_token_seconds", "vllm", "histogram", unit="s"),
    # --- SGLang
    Alias("sglang:num_queue_reqs", "sglang", "gauge", "queue", "depth", unit="requests"),
    Alias("sglang:num_running_reqs", "sglang", "gauge", "queue", RUNNING, unit="requests"),
    Alias("sglang:token_usage", "sglang", "gauge", "gpu", "kv_cache_util", unit="fraction",
          note="share of the KV-cache token pool in use"),
    Alias("sglang:time_to_first_token_seconds", "sglang", "histogram", unit="s"),
    Alias("sglang:e2e_request_latency_seconds", "sglang", "histogram", unit="s"),
    Alias("sglang:queue_time_seconds", "sglang", "histogram", unit="s"),
    Alias("sglang:inter_token_latency_seconds", "sglang", "histogram", unit="s"),
    # --- Triton Inference Server (per model) and its TensorRT-LLM backend
    Alias("nv_inference_pending_request_count", "triton", "gauge", "queue", "depth", unit="requests"),
    Alias("nv_inference_queue_duration_us", "triton", "counter", unit="us",
          note="cumulative queue time of all requests, microseconds"),
    Alias("nv_inference_request_success", "triton", "counter", unit="requests"),
    Alias("nv_gpu_utilization", "triton", "gauge", "gpu", "gpu_util", unit="fraction"),
    Alias("nv_gpu_power_usage", "triton", "gauge", "gpu", "power_w", unit="W"),
    Alias("nv_gpu_memory_used_bytes", "triton", "gauge", "gpu", "mem_used_bytes", unit="bytes"),
    Alias("nv_trt_llm_request_metrics", "tensorrt-llm", "gauge", "queue", "depth", unit="requests",
          select=(("request_type", "waiting"),)),
    Alias("nv_trt_llm_request_metrics", "tensorrt-llm", "gauge", "queue", RUNNING, unit="requests",
          select=(("request_type", "scheduled"),)),
    Alias("nv_trt_llm_kv_cache_block_metrics", "tensorrt-llm", "gauge", "gpu", "kv_cache_util", unit="fraction",
          select=(("kv_cache_block_type", "fraction"),)),
    Alias("trtllm_num_requests_waiting", "tensorrt-llm", "gauge", "queue", "depth", unit="requests"),
    Alias("trtllm_num_requests_running", "tensorrt-llm", "gauge", "queue", RUNNING, unit="requests"),
    Alias("trtllm_kv_cache_utilization", "tensorrt-llm", "gauge", "gpu", "kv_cache_util", unit="fraction"),
    # --- NVIDIA Dynamo (frontend per model; workers' KV statistics)
    Alias("dynamo_frontend_queued_requests", "dynamo", "gauge", "queue", "depth", unit="requests"),
    Alias("dynamo_frontend_inflight_requests", "dynamo", "gauge", "queue", RUNNING, unit="requests"),
    Alias("dynamo_component_kvstats_gpu_cache_usage_percent", "dynamo", "gauge", "gpu", "kv_cache_util", unit="fraction",
          note="the worker's vLLM KV-cache usage, a fraction despite `percent` in its name"),
    Alias("dynamo_frontend_time_to_first_token_seconds", "dynamo", "histogram", unit="s"),
    Alias("dynamo_frontend_request_duration_seconds", "dynamo", "histogram", unit="s"),
    Alias("dynamo_frontend_inter_token_latency_seconds", "dynamo", "histogram", unit="s"),
    # --- DCGM exporter (per GPU or MIG instance)
    Alias("DCGM_FI_DEV_GPU_UTIL", "dcgm", "gauge", "gpu", "gpu_util", divisor=100.0, unit="%", note="percent / 100"),
    Alias("DCGM_FI_PROF_SM_ACTIVE", "dcgm", "gauge", "gpu", "sm_active", unit="ratio"),
    Alias("DCGM_FI_PROF_DRAM_ACTIVE", "dcgm", "gauge", "gpu", "mem_bw_util", unit="ratio"),
    Alias("DCGM_FI_DEV_POWER_USAGE", "dcgm", "gauge", "gpu", "power_w", unit="W"),
    Alias("DCGM_FI_DEV_FB_USED", "dcgm", "gauge", "gpu", "mem_used_bytes", scale=MIB, unit="MiB", note="MiB x 2^20"),
)

ENGINES: dict[str, tuple[str, ...]] = {
    "prometheus": ("vllm", "sglang", "triton", "tensorrt-llm", "dynamo"),
    "dcgm": ("dcgm",),
}

HISTOGRAM_PARTS = ("_bucket", "_sum", "_count")


def aliases_for(source: str) -> tuple[Alias, ...]:
    engines = ENGINES[source]
    return tuple(a for a in ALIASES if a.engine in engines)
