"""`prometheus`: serving-engine metrics scraped by Prometheus (vLLM, SGLang, Triton / TensorRT-LLM,
Dynamo): text exposition snapshots or the HTTP API's `query_range` JSON (prom_read.py).

What becomes rows (the alias table, metric_names.py):

| metric kind | becomes |
|---|---|
| queue-length gauges (`vllm:num_requests_waiting`, ...) | queue `sample`: depth (running requests: extra `running_requests`) |
| KV-cache gauges (`vllm:kv_cache_usage_perc`, `sglang:token_usage`, ...) | gpu `sample`: kv_cache_util (a fraction) |
| Triton GPU gauges (`nv_gpu_utilization`, `nv_gpu_power_usage`, ...) | gpu `sample`: gpu_util, power_w, mem_used_bytes |
| event counters (`vllm:num_preemptions_total`, ...) | no rows: their increase per window (resets handled) in the provenance |
| latency histograms (`*_seconds_bucket/_sum/_count`) | no rows: count, mean and interpolated p50/p95/p99 per window in the provenance |

Entities, from labels only: queue = the `instance` label, else `pod`, else the file's stem (one
scrape file is one endpoint), followed by `/label=value` for each of `engine`, `model`, `dp_rank`,
`tp_rank` present. device = the `gpu_uuid`/`UUID`/`uuid` label when the series names its GPU;
engine metrics name none (vLLM and SGLang report their KV cache per engine), so their device is
the engine: the queue id (as GenTD26's device is its container). `model_name`/`model`, `pod`,
`namespace` are kept as the extra columns `model`, `pod`, `namespace` (`--map` can look the pool
up from them).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from coherence_diag.ingest.common import Mapped
from coherence_diag.ingest.prom_map import Entities, first_label, map_samples
from coherence_diag.ingest.prom_read import label, read_samples

NAME = "prometheus"
ENGINE_LABELS = ("engine", "model", "dp_rank", "tp_rank")


def engine_entities(frame: pl.DataFrame, stem: str) -> Entities:
    base = pl.coalesce(first_label(frame, ("instance", "pod")), pl.lit(stem))
    parts = [pl.when(pl.col(label(n)) != "").then(pl.lit(f"/{n}=") + pl.col(label(n))) for n in ENGINE_LABELS if label(n) in frame.columns]
    queue = pl.concat_str([base, *parts], ignore_nulls=True) if parts else base
    gpu = first_label(frame, ("gpu_uuid", "UUID", "uuid"))
    return Entities(
        queue=queue,
        device=pl.coalesce(gpu, queue),
        host=first_label(frame, ("Hostname", "hostname")),
        queue_formula=(
            f"the `instance` label, else `pod`, else the file stem ({stem}); then `/label=value` for each of {', '.join(ENGINE_LABELS)} present"
        ),
        device_formula="the `gpu_uuid`/`UUID` label of GPU metrics; for engine metrics (which name no GPU) the engine: its queue id",
        device_attributes={},
    )


def read(path: Path, name: str = NAME) -> Mapped:
    return read_at(path, name, None)


def read_at(path: Path, name: str, snapshot_ns: int | None) -> Mapped:
    samples = read_samples(path, name, snapshot_ns)
    return map_samples(path, name, samples, engine_entities(samples.frame, path.stem))


SUPPLIES = (
    "queue sample rows: depth (and running_requests) per engine, from vLLM, SGLang, Triton/TensorRT-LLM, Dynamo queue gauges",
    "gpu sample rows: kv_cache_util per engine; gpu_util, power_w, mem_used_bytes from Triton's GPU gauges",
    "provenance summaries: latency histograms (count, mean, p50/p95/p99 estimates) and event counters (preemptions) per 5-minute window",
)
CANNOT_SUPPLY = (
    "requests: no scheduler rows (histograms and counters are aggregates: no request is invented from them)",
    "preempt rows: the preemption counter names no request",
    "SM activity, memory bandwidth (use the dcgm source); pools (give them with --map from queue, model, pod or namespace)",
)
