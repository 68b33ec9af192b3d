"""`dcgm`: NVIDIA DCGM exporter metrics, its `/metrics` text or a Prometheus `query_range` JSON of
them (prom_read.py reads both).

| field | becomes |
|---|---|
| `DCGM_FI_DEV_GPU_UTIL` (percent) | gpu `sample`: gpu_util = value / 100 |
| `DCGM_FI_PROF_SM_ACTIVE` (ratio) | sm_active |
| `DCGM_FI_PROF_DRAM_ACTIVE` (ratio) | mem_bw_util |
| `DCGM_FI_DEV_POWER_USAGE` (W) | power_w |
| `DCGM_FI_DEV_FB_USED` (MiB) | mem_used_bytes = value x 2^20 |

Labels (dcgm-exporter's set: `gpu`, `UUID` (older releases `uuid`), `pci_bus_id`, `device`,
`modelName`, `Hostname`/`hostname`, `GPU_I_PROFILE`/`GPU_I_ID` on MIG instances, `container`,
`namespace`, `pod` with Kubernetes attribution): device = `UUID`, and on a MIG instance
`UUID/GPU_I_ID` (instances of one GPU are separate devices); without a UUID, `Hostname:gpu`; a
sample with neither is not placed (`unmapped_record`). One `device_info` row per device carries
host, accelerator (`modelName`) and mig_profile (`GPU_I_PROFILE`); `pod` and `namespace` are
kept as extra columns for `--map` to look the pool up.

Profiling fields (`DCGM_FI_PROF_*`) are not reported on every device (MIG instances on some GPUs,
vGPU guests): where a device has no such sample its sm_active / mem_bw_util stay empty, never 0,
and the provenance names those devices: their nominal utilization cannot be checked against SM
activity (HCL unverifiable there).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from coherence_diag.ingest.common import Mapped
from coherence_diag.ingest.prom_map import Entities, first_label, map_samples
from coherence_diag.ingest.prom_read import read_samples

NAME = "dcgm"
PROFILING = ("sm_active", "mem_bw_util")


def read(path: Path, name: str = NAME) -> Mapped:
    return read_at(path, name, None)


def read_at(path: Path, name: str, snapshot_ns: int | None) -> Mapped:
    samples = read_samples(path, name, snapshot_ns)
    mapped = map_samples(path, name, samples, _entities(samples.frame))
    return Mapped(mapped.frame, mapped.records, mapped.audit, mapped.columns, mapped.notes + _unverifiable(mapped.frame), mapped.summaries)


def _entities(frame: pl.DataFrame) -> Entities:
    uuid = first_label(frame, ("UUID", "uuid"))
    instance = first_label(frame, ("GPU_I_ID",))
    host = first_label(frame, ("Hostname", "hostname"))
    index = first_label(frame, ("gpu",))
    by_uuid = pl.concat_str([uuid, pl.when(instance.is_not_null()).then(pl.lit("/") + instance)], ignore_nulls=True)
    by_host = pl.concat_str([host, pl.lit(":"), index, pl.when(instance.is_not_null()).then(pl.lit("/") + instance)], ignore_nulls=True)
    device = pl.when(uuid.is_not_null()).then(by_uuid).when(host.is_not_null() & index.is_not_null()).then(by_host)
    return Entities(
        queue=None,
        device=device,
        host=host,
        queue_formula="",
        device_formula="the `UUID` (or `uuid`) label, `/GPU_I_ID` appended on a MIG instance; without a UUID `Hostname:gpu`",
        device_attributes={
            "accelerator": (first_label(frame, ("modelName", "model_name")), "modelName"),
            "mig_profile": (first_label(frame, ("GPU_I_PROFILE",)), "GPU_I_PROFILE"),
        },
    )


def _unverifiable(frame: pl.DataFrame) -> tuple[str, ...]:
    """Devices with utilization samples but no profiling sample: name them, with why it matters."""
    if frame.is_empty() or "gpu_util" not in frame.columns:
        return ()
    samples = frame.filter(pl.col("event") == "sample")
    have = [pl.col(c).is_not_null().any() for c in PROFILING if c in samples.columns]
    per_device = samples.group_by("device").agg(
        pl.col("gpu_util").is_not_null().any().alias("util"),
        (pl.any_horizontal(have) if have else pl.lit(False)).alias("prof"),
    )
    missing = sorted(per_device.filter(pl.col("util") & ~pl.col("prof"))["device"].to_list())
    if not missing:
        return ()
    mig = frame.filter((pl.col("event") == "device_info") & pl.col("device").is_in(missing))
    kinds = "MIG instances" if "mig_profile" in mig.columns and mig["mig_profile"].null_count() < mig.height else "MIG instances or vGPU guests"
    shown = ", ".join(missing[:8]) + (", ..." if len(missing) > 8 else "")
    return (
        f"{len(missing)} devices report no profiling fields (DCGM_FI_PROF_SM_ACTIVE/DRAM_ACTIVE; {kinds} do not expose them): "
        f"sm_active and mem_bw_util are absent there, not 0; HCL is unverifiable for them (nominal utilization cannot be checked "
        f"against SM activity): {shown}",
    )


SUPPLIES = (
    "gpu sample rows per GPU or MIG instance: gpu_util (percent / 100), sm_active, mem_bw_util, power_w, mem_used_bytes",
    "gpu device_info rows: host, accelerator (modelName), mig_profile (GPU_I_PROFILE)",
)
CANNOT_SUPPLY = (
    "requests, queues, KV cache: DCGM sees devices only",
    "profiling fields on MIG instances or vGPU guests that do not expose them (left empty, never 0)",
    "pools (give them with --map from pod or namespace)",
)
