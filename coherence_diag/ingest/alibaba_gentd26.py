"""`alibaba-gentd26`: Alibaba's GenAI (Stable Diffusion) serverless serving metrics, "GenTD26"
(cluster-trace-v2026-GenAI; Lin et al., SoCC'25).

Metric files sampled every 57 s per container, each `timestamp_anon` (seconds, anonymised by a
constant shift), `value`, `container_ip` (MD5 of the container's IP; empty = not attributed):

| file | becomes |
|---|---|
| `pod_gpu_duty_cycle_anon.csv` | gpu `sample`: device = container, gpu_util = value / 100 (percent) |
| `pod_gpu_memory_used_bytes_anon.csv` | gpu `sample`: device = container, mem_used_bytes = value |
| `queue_rt_raw_anon.csv` | queue `sample`: queue = container, wait_ms = value (ms) |
| `queue_size_raw_anon.csv` | queue `sample`: queue = `gateway` (the file's empty container), depth = value |

GenTD26 reports GPU metrics per container, one GPU each: the container id is the device id and
names the container's queue too, so GPU and queue samples of one container join. Given the
directory, the other files are listed as not converted (request rates, latency series, the
per-request LoRA trace of a different period).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from coherence_diag.ingest.common import (
    Mapped,
    csv_header,
    not_the_source,
    read_csv_text,
    require_fields,
    set_aside_unparsed,
)
from coherence_diag.ingest.source import RECORD, audit_rows, empty_audit
from coherence_diag.model import ColumnOrigin

NAME = "alibaba-gentd26"
FIELDS = ("timestamp_anon", "value", "container_ip")
DUTY, MEMORY, QUEUE_TIME, QUEUE_SIZE = (
    "pod_gpu_duty_cycle_anon.csv", "pod_gpu_memory_used_bytes_anon.csv", "queue_rt_raw_anon.csv", "queue_size_raw_anon.csv",
)
FILES = (DUTY, MEMORY, QUEUE_TIME, QUEUE_SIZE)
GATEWAY = "gateway"
NOT_CONVERTED = {
    "qps.csv": "per-container request rates over 57 s windows, not requests: no arrival can be made from them",
    "model_predict_data_anon.csv": "container-level inference latency series: no per-request trace column",
    "pipeline_inference_data_anon.csv": "container-level pipeline latency series: no per-request trace column",
    "pipeline_update_latency_anon.csv": "model/pipeline switch latencies: no trace column",
    "basemodel_update_latency_anon.csv": "base model load (cold start) latencies: no trace column",
    "lora_update_latency_anon.csv": "LoRA load latencies: no trace column",
    "controlnet_latency_data_anon.csv": "ControlNet load latencies: no trace column",
    "lora_request_trace.csv": "per-request trace of a different period (2024), cannot be aligned with the metrics",
}


def read(path: Path, name: str = NAME) -> Mapped:
    if path.name not in FILES:
        raise not_the_source(path, name, "one of the metric files " + ", ".join(FILES), [path.name])
    require_fields(path, csv_header(path, name), FIELDS, name)
    raw = read_csv_text(path, FIELDS, name)
    seconds = pl.col("timestamp_anon").str.strip_chars().cast(pl.Float64, strict=False)
    value = pl.col("value").str.strip_chars().cast(pl.Float64, strict=False)
    container = pl.col("container_ip").str.strip_chars()
    raw = raw.with_columns(seconds.alias("__s"), value.alias("__v"), pl.when(container != "").then(container).alias("__c"))
    layer = "queue" if path.name in (QUEUE_TIME, QUEUE_SIZE) else "gpu"
    unmapped = empty_audit()
    if path.name != QUEUE_SIZE:  # samples of no container cannot be attributed to a device or queue
        unmapped = audit_rows(raw.filter(pl.col("__c").is_null()), file=str(path), layer=layer, reason="unmapped_record", column="container_ip")
        raw_kept = raw.filter(pl.col("__c").is_not_null())
    else:
        raw_kept = raw
    checks = [("timestamp_anon", ~pl.col("__s").is_finite()), ("value", ~pl.col("__v").is_finite())]
    kept, audit = set_aside_unparsed(raw_kept, checks, file=str(path), layer=layer)
    ts = (pl.col("__s") * 1e9).round(0).cast(pl.Int64).alias("ts")
    common = [ts, pl.lit(layer).alias("layer"), pl.lit("sample").alias("event")]
    if path.name == DUTY:
        frame = kept.select(*common, pl.col("__c").alias("device"), (pl.col("__v") / 100.0).alias("gpu_util"), pl.col(RECORD))
    elif path.name == MEMORY:
        frame = kept.select(*common, pl.col("__c").alias("device"), pl.col("__v").round(0).cast(pl.Int64).alias("mem_used_bytes"), pl.col(RECORD))
    elif path.name == QUEUE_TIME:
        frame = kept.select(*common, pl.col("__c").alias("queue"), pl.col("__v").alias("wait_ms"), pl.col(RECORD))
    else:
        queue = pl.coalesce(pl.col("__c"), pl.lit(GATEWAY)).alias("queue")
        frame = kept.select(*common, queue, pl.col("__v").round(0).cast(pl.Int64).alias("depth"), pl.col(RECORD))
    return Mapped(frame, raw.height, pl.concat([unmapped, audit]), _COLUMNS[path.name])


def skipped(directory: Path) -> tuple[str, ...]:
    """Notes on the files of a GenTD26 directory that are not converted, and why."""
    return tuple(f"{n} not converted: {why}" for n, why in NOT_CONVERTED.items() if (directory / n).is_file())


_CLOCK = "timestamp_anon seconds x 10^9 (anonymised by a constant shift: a relative clock)"
_COLUMNS = {
    DUTY: (
        ColumnOrigin("gpu", "ts", "observed", NAME, ("timestamp_anon",), note=_CLOCK),
        ColumnOrigin("gpu", "event", "derived", NAME, (), "`sample`: one metric sample per container every 57 s"),
        ColumnOrigin("gpu", "device", "derived", NAME, ("container_ip",), "device = container_ip (GenTD26 reports one GPU per container)"),
        ColumnOrigin("gpu", "gpu_util", "observed", NAME, ("value",), note=f"{DUTY}: duty cycle in percent / 100"),
    ),
    MEMORY: (
        ColumnOrigin("gpu", "ts", "observed", NAME, ("timestamp_anon",), note=_CLOCK),
        ColumnOrigin("gpu", "event", "derived", NAME, (), "`sample`: one metric sample per container every 57 s"),
        ColumnOrigin("gpu", "device", "derived", NAME, ("container_ip",), "device = container_ip (GenTD26 reports one GPU per container)"),
        ColumnOrigin(
            "gpu", "mem_used_bytes", "observed", NAME, ("value",),
            note=f"{MEMORY}: bytes, rounded to whole bytes (the publisher scaled the values, leaving fractions)",
        ),
    ),
    QUEUE_TIME: (
        ColumnOrigin("queue", "ts", "observed", NAME, ("timestamp_anon",), note=_CLOCK),
        ColumnOrigin("queue", "event", "derived", NAME, (), "`sample`: one metric sample per container every 57 s"),
        ColumnOrigin("queue", "queue", "derived", NAME, ("container_ip",), "queue = container_ip (each container's own queue)"),
        ColumnOrigin("queue", "wait_ms", "observed", NAME, ("value",), note=f"{QUEUE_TIME}: time spent queuing, ms"),
    ),
    QUEUE_SIZE: (
        ColumnOrigin("queue", "ts", "observed", NAME, ("timestamp_anon",), note=_CLOCK),
        ColumnOrigin("queue", "event", "derived", NAME, (), "`sample`: one metric sample every 57 s"),
        ColumnOrigin("queue", "queue", "derived", NAME, ("container_ip",), "`gateway`: the file's samples name no container (the gateway's queue)"),
        ColumnOrigin(
            "queue", "depth", "derived", NAME, ("value",), "round(value): the file holds the mean backlog of each 57 s sample, in tasks",
            note="fractional means (e.g. 0.33) become whole tasks",
        ),
    ),
}
SUPPLIES = (
    "gpu sample rows per container: gpu_util (duty cycle), mem_used_bytes",
    "queue sample rows: wait_ms per container, depth of the gateway queue",
)
CANNOT_SUPPLY = (
    "requests: no scheduler rows (request rates and latency series are per container, not per request)",
    "SM activity, memory bandwidth, power, accelerator model; hosts and pools",
)
