"""Turn the engine logs and telemetry arrays into one trace-format v1 table.

Memory matters at ~10M rows: every block is built with the full schema, where the columns a
block does not use are typed all-null columns (free until written), and blocks are only
sorted on the columns they carry. A global sort would materialize all of those nulls, so the
table is a concatenation of blocks (device info, scheduler, exec, transfers, samples, ...),
each in time order; trace-format v1 does not require sorted rows.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from coherence_diag.simulate.engine import EVENT_NAMES, HOLD_KEY, PHASE_NAMES, Logs
from coherence_diag.simulate.naming import Names
from coherence_diag.simulate.plan import MAX_ATTEMPTS, Plan
from coherence_diag.simulate.schema import COLUMNS, TS_DTYPE
from coherence_diag.simulate.telemetry import Samples

_SHIFT = int(np.log2(MAX_ATTEMPTS))


class _Ctx:
    def __init__(self, plan: Plan, names: Names, origin_ns: int) -> None:
        self.plan = plan
        self.names = names
        self.origin_ns = origin_ns
        self.dev_host = np.asarray(plan.fleet.dev_host, dtype=np.int64)
        self.dev_pool = np.asarray(plan.fleet.dev_pool, dtype=np.int64)
        req_ids = "r" + pl.Series(np.arange(plan.n_requests, dtype=np.int64)).cast(pl.String).str.zfill(7)
        job_ids = "job-" + pl.Series(np.arange(len(plan.jobs.arrival_s), dtype=np.int64)).cast(pl.String).str.zfill(5)
        self.all_ids = pl.concat([req_ids, job_ids]).rename("request_id")

    def ts(self, t_s: np.ndarray) -> pl.Series:
        ns = self.origin_ns + np.rint(np.asarray(t_s, dtype=np.float64) * 1e9).astype(np.int64)
        return pl.Series("ts", ns, dtype=pl.Int64).cast(TS_DTYPE)

    def ids_for_keys(self, key: np.ndarray) -> pl.Series:
        idx = np.where(key >= 0, key >> _SHIFT, self.plan.n_requests + (-key - 1))
        hold = key == HOLD_KEY  # an external batch system's hold: no request id
        if not hold.any():
            return self.all_ids.gather(pl.Series(idx)).rename("request_id")
        return lookup("request_id", self.all_ids.to_list(), np.where(hold, -1, idx))

    def env_of_host(self, host: np.ndarray, t_s: np.ndarray) -> pl.Series:
        return lookup("env", self.names.env, self.plan.host_env_at(host, t_s))


def lookup(name: str, values: list[str], idx: np.ndarray) -> pl.Series:
    """values[idx] as a String series, null where idx < 0."""
    idx = np.asarray(idx, dtype=np.int64)
    if len(values) == 0:
        return pl.repeat(None, len(idx), dtype=pl.String, eager=True).alias(name)
    out = pl.Series(name, values, dtype=pl.String).gather(pl.Series(np.where(idx >= 0, idx, 0)))
    if (idx < 0).any():
        out = pl.select(pl.when(pl.Series(idx >= 0)).then(out).otherwise(None)).to_series()
    return out.rename(name)


def _const(name: str, value: str, n: int) -> pl.Series:
    return pl.repeat(value, n, dtype=pl.String, eager=True).alias(name)


def _masked(name: str, values: np.ndarray, mask: np.ndarray, dtype: pl.DataType) -> pl.Series:
    s = pl.Series(name, values).cast(dtype)
    return pl.select(pl.when(pl.Series(mask)).then(s).otherwise(None)).to_series().rename(name)


def _block(ctx: _Ctx, t_s: np.ndarray, layer: str, cols: list[pl.Series]) -> pl.DataFrame:
    """Rows of one kind with the full schema, in COLUMNS order, stably sorted by time."""
    n = len(t_s)
    df = pl.DataFrame([ctx.ts(t_s), _const("layer", layer, n), *cols])
    if n > 1 and not bool(np.all(np.diff(t_s) >= 0)):
        df = df[np.argsort(t_s, kind="stable")]  # gathers only the columns this block carries
    return pl.DataFrame(
        [df.get_column(c).cast(t) if c in df.columns else pl.repeat(None, n, dtype=t, eager=True).alias(c) for c, t in COLUMNS.items()]
    )


def scheduler_block(ctx: _Ctx, logs: Logs) -> pl.DataFrame:
    plan = ctx.plan
    t = np.frombuffer(logs.s_t, dtype=np.float64)
    ev = np.frombuffer(logs.s_ev, dtype=np.int8).astype(np.int64)
    key = np.frombuffer(logs.s_key, dtype=np.int64)
    pred = np.frombuffer(logs.s_pred, dtype=np.float64)
    is_job = key < 0
    req = np.where(is_job, 0, key >> _SHIFT)
    is_arrive = ev == EVENT_NAMES.index("arrive")
    is_head = is_arrive | (ev == EVENT_NAMES.index("retry"))
    is_complete = ev == EVENT_NAMES.index("complete")
    mig_s = plan.notes.get("migration_s")
    job_env = (t >= mig_s).astype(np.int64) if isinstance(mig_s, float) else np.zeros(len(t), dtype=np.int64)
    inf_arrive = is_arrive & ~is_job
    return _block(
        ctx,
        t,
        "scheduler",
        [
            lookup("event", list(EVENT_NAMES), ev),
            ctx.ids_for_keys(key),
            pl.Series("attempt", np.where(is_job, 0, key & (MAX_ATTEMPTS - 1))),
            lookup("pool", ctx.names.pool, np.frombuffer(logs.s_pool, dtype=np.int64)),
            lookup("device", ctx.names.device, np.frombuffer(logs.s_dev, dtype=np.int64)),
            lookup("env", ctx.names.env, np.where(is_job, job_env, plan.req_env[req])),
            _masked("priority", np.where(is_job, 2, plan.req.priority[req]), is_head, pl.Int64()),
            lookup("workload_class", ["inference", "batch"], np.where(is_head, is_job.astype(np.int64), -1)),
            _masked("slo_ms", np.round(plan.slo_ms[req], 3), inf_arrive, pl.Float64()),
            _masked("ttft_slo_ms", np.round(plan.ttft_slo_ms[req], 3), inf_arrive, pl.Float64()),
            _masked("predicted_ms", np.round(np.nan_to_num(pred), 3), ~np.isnan(pred), pl.Float64()),
            _masked("prompt_tokens", plan.req.prompt[req], inf_arrive, pl.Int64()),
            _masked("output_tokens", plan.req.output[req], is_complete & ~is_job, pl.Int64()),
        ],
    )


def exec_block(ctx: _Ctx, logs: Logs) -> pl.DataFrame:
    t0 = np.frombuffer(logs.x_t0, dtype=np.float64)
    dev = np.frombuffer(logs.x_dev, dtype=np.int64)
    tok = np.frombuffer(logs.x_tok, dtype=np.int64)
    return _block(
        ctx,
        t0,
        "gpu",
        [
            _const("event", "exec", len(t0)),
            ctx.ids_for_keys(np.frombuffer(logs.x_key, dtype=np.int64)),
            lookup("device", ctx.names.device, dev),
            ctx.env_of_host(ctx.dev_host[dev], t0),
            lookup("phase", list(PHASE_NAMES), np.frombuffer(logs.x_phase, dtype=np.int8).astype(np.int64)),
            pl.Series("dur_ms", np.round(np.frombuffer(logs.x_dur, dtype=np.float64), 3)),
            pl.Series("batch_size", np.frombuffer(logs.x_batch, dtype=np.int64)),
            _masked("tokens", tok, tok >= 0, pl.Int64()),
        ],
    )


def transfer_block(ctx: _Ctx, logs: Logs) -> pl.DataFrame:
    t0 = np.frombuffer(logs.n_t0, dtype=np.float64)
    src = np.frombuffer(logs.n_src, dtype=np.int64)
    return _block(
        ctx,
        t0,
        "network",
        [
            _const("event", "transfer", len(t0)),
            ctx.ids_for_keys(np.frombuffer(logs.n_key, dtype=np.int64)),
            lookup("src_device", ctx.names.device, src),
            lookup("dst_device", ctx.names.device, np.frombuffer(logs.n_dst, dtype=np.int64)),
            pl.Series("dur_ms", np.round(np.frombuffer(logs.n_dur, dtype=np.float64), 3)),
            pl.Series("bytes", np.frombuffer(logs.n_bytes, dtype=np.int64)),
            _const("kind", "kv_transfer", len(t0)),
            lookup("link", ctx.names.link, np.frombuffer(logs.n_link, dtype=np.int64)),
            ctx.env_of_host(ctx.dev_host[src], t0),
        ],
    )


def samples_block(ctx: _Ctx, layer: str, entity_col: str, smp: Samples, env_host: np.ndarray) -> pl.DataFrame:
    names = {"device": ctx.names.device, "queue": ctx.names.queue, "link": ctx.names.link}[entity_col]
    cols = [_const("event", "sample", len(smp.t_s)), lookup(entity_col, names, smp.entity)]
    if entity_col == "queue":
        cols.append(lookup("pool", ctx.names.pool, smp.entity))
    if layer == "hypervisor":
        cols.append(lookup("host", ctx.names.host, ctx.dev_host[smp.entity]))
    cols.append(ctx.env_of_host(env_host, smp.t_s))
    cols += [pl.Series(k, v) for k, v in smp.cols.items()]
    return _block(ctx, smp.t_s, layer, cols)


def device_info_block(ctx: _Ctx) -> pl.DataFrame:
    fleet = ctx.plan.fleet
    n = fleet.n_devices
    online = np.asarray(fleet.dev_online_s, dtype=float)
    mig = [p.mig_profile for p in fleet.pools]
    return _block(
        ctx,
        online,
        "gpu",
        [
            _const("event", "device_info", n),
            lookup("device", ctx.names.device, np.arange(n)),
            lookup("host", ctx.names.host, ctx.dev_host),
            lookup("pool", ctx.names.pool, ctx.dev_pool),
            ctx.env_of_host(ctx.dev_host, online),
            pl.Series("accelerator", [a.name for a in fleet.dev_accel], dtype=pl.String),
            pl.Series("mig_profile", [mig[p] for p in ctx.dev_pool], dtype=pl.String),
            pl.Series("virtualized", [fleet.host_virtualized[h] for h in ctx.dev_host], dtype=pl.Boolean),
        ],
    )


def migrate_block(ctx: _Ctx) -> pl.DataFrame:
    plan = ctx.plan
    switch = plan.host_env_switch_s[ctx.dev_host]
    dev = np.flatnonzero(np.isfinite(switch))
    return _block(
        ctx,
        switch[dev],
        "hypervisor",
        [
            _const("event", "migrate", len(dev)),
            lookup("host", ctx.names.host, ctx.dev_host[dev]),
            lookup("device", ctx.names.device, dev),
            lookup("env", ctx.names.env, plan.host_env_after[ctx.dev_host[dev]]),
        ],
    )


def assemble(
    plan: Plan,
    logs: Logs,
    names: Names,
    origin_ns: int,
    gpu: Samples,
    queue: Samples,
    link: Samples,
    hyper: Samples,
) -> pl.DataFrame:
    ctx = _Ctx(plan, names, origin_ns)
    fleet = plan.fleet
    pool_host = np.array([fleet.dev_host[p.devices[0]] for p in fleet.pools], dtype=np.int64)
    link_host = np.zeros(len(fleet.link_name), dtype=np.int64)
    for h, ln in enumerate(fleet.host_link):
        if ln >= 0:
            link_host[ln] = h
    blocks = [
        device_info_block(ctx),
        scheduler_block(ctx, logs),
        exec_block(ctx, logs),
        transfer_block(ctx, logs),
        samples_block(ctx, "gpu", "device", gpu, ctx.dev_host[gpu.entity]),
        samples_block(ctx, "queue", "queue", queue, pool_host[queue.entity]),
        samples_block(ctx, "network", "link", link, link_host[link.entity]),
        samples_block(ctx, "hypervisor", "device", hyper, ctx.dev_host[hyper.entity]),
        migrate_block(ctx),
    ]
    return pl.concat([b for b in blocks if b.height], how="vertical", rechunk=False)
