"""Compare two traces, or two environments of one trace: deltas, distribution shift, findings.

    from coherence_diag.compare import compare_traces, compare_envs
    result = compare_traces("before.parquet", "after.parquet")
    result = compare_envs("migration.parquet", "onprem", "cloud-a")

Each side is analyzed in full (`analysis.analyze_trace`). The comparison then holds:

- every measure of the report (measures.MEASURES) side by side, with delta, relative change and
  whether it moved the better or the worse way (`measures`: the before/after table);
- for end-to-end latency, TTFT and queue wait, two-sample tests and effect sizes on
  workload-matched requests (`shifts`; see features/shift.py for the matching);
- the findings of each side paired by rule: new, resolved, persisting (`findings`);
- findings about the pair itself (`pair_findings`): the rules that read the `env_shift_*`
  features (e.g. `migration-reconfiguration-risk`) evaluated on the two sides, with the same
  thresholds, summaries and evidence as inside one trace.

Nothing here prints or writes; render/compare.py renders a `Comparison`.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, cast

import polars as pl

from coherence_diag import analysis, measures
from coherence_diag.errors import InputError
from coherence_diag.features import GROUPS, FeatureValues
from coherence_diag.features.environments import SHIFT_GROUP, shift_features
from coherence_diag.features.shift import distribution_shift
from coherence_diag.model import (
    SEVERITIES,
    Change,
    Comparison,
    ComponentChange,
    Finding,
    FindingChange,
    MeasureChange,
    Report,
    Shift,
    Side,
)
from coherence_diag.rules import engine
from coherence_diag.rules.loader import Rule, load_rules
from coherence_diag.scale.read import ScaleOptions
from coherence_diag.timeseries import DEFAULT_WINDOW_S
from coherence_diag.validate import DEFAULT_MAX_BAD_FRACTION, ValidatedTrace

# A shift is called significant when the KS test rejects at ALPHA *and* the KS distance reaches
# MIN_KS: with tens of thousands of requests any difference is "significant", so the effect size
# decides whether it matters. Three signals are tested; ALPHA is already strict for that.
ALPHA = 0.001
MIN_KS = 0.05
# Below these a move is reported as "unchanged" in the before/after table: relative for ms and
# rps measures, absolute (one percentage point / 0.01) for fractions and indices.
UNCHANGED_REL = 0.02
UNCHANGED_ABS = 0.01

# signal -> (request-path column, per-request objective column or None, label)
SIGNALS: dict[str, tuple[str | None, str]] = {
    "latency_ms": ("slo_ms", "end-to-end latency"),
    "ttft_ms": ("ttft_slo_ms", "time to first token"),
    "queue_wait_ms": (None, "queue wait"),
}

@dataclass
class _SideAnalysis:
    side: Side
    result: analysis.Analysis


def compare_traces(
    base: str | Path,
    candidate: str | Path,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    rules_dirs: list[Path] | None = None,
    progress: analysis.ProgressCallback | None = None,
    scale: ScaleOptions | None = None,
) -> Comparison:
    """Compare trace `candidate` against trace `base` (e.g. after a change against before it)."""
    sides = []
    for name, path in (("base", base), ("candidate", candidate)):
        step = _side_progress(progress, name)
        result = analysis.analyze(
            path, window_s=window_s, max_bad_fraction=max_bad_fraction, rules_dirs=rules_dirs, progress=step, scale=scale
        )
        sides.append(_side_of(result, None))
    (progress or _quiet)("comparing")
    return _compare(sides[0], sides[1], rules_dirs)


def _quiet(_message: str) -> None:
    pass


def _side_progress(progress: analysis.ProgressCallback | None, side: str) -> analysis.ProgressCallback:
    """The analysis steps of one side, labelled with the side."""
    return (lambda message: progress(f"{side}: {message}")) if progress else _quiet


def compare_envs(
    path: str | Path,
    base_env: str | None = None,
    candidate_env: str | None = None,
    *,
    window_s: float = DEFAULT_WINDOW_S,
    max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION,
    rules_dirs: list[Path] | None = None,
    progress: analysis.ProgressCallback | None = None,
    scale: ScaleOptions | None = None,
) -> Comparison:
    """Compare two `env` values of one trace (e.g. the source and target of a migration).

    Without env names the trace must hold exactly two; the base is the one whose scheduler rows
    come first (median time), the candidate the later one.
    """
    (progress or _quiet)("reading and validating trace")
    # Each side's request paths are built from its env's rows, all of them: work units, which
    # give the analysis projected layers, do not serve here.
    if scale is not None and scale.explicit:
        raise InputError("--memory-budget and --scheduler apply to two traces; comparing two envs of one trace reads it in one pass")
    trace = analysis.read_trace(path, max_bad_fraction=max_bad_fraction)
    present = trace_envs(trace)
    if base_env is None and candidate_env is None:
        if len(present) != 2:
            listed = ", ".join(present) if present else "none"
            raise InputError(
                f"{trace.source.display_path}: comparing environments needs exactly two `env` values "
                f"(found {len(present)}: {listed}); name them with --env BASE --env CANDIDATE"
            )
        base_env, candidate_env = present
    if base_env is None or candidate_env is None or base_env == candidate_env:
        raise InputError(f"comparing environments needs two different env values, got {base_env!r} and {candidate_env!r}")
    for env in (base_env, candidate_env):
        if env not in present:
            raise InputError(
                f"{trace.source.display_path}: no rows with env {env!r}; the trace holds: {', '.join(present) or 'no env values'}"
            )
    sides: list[_SideAnalysis] = []
    for env in (base_env, candidate_env):
        # Each side's rows are restricted in the call: the analysis frees them after the paths
        # (the whole trace is kept for the next side).
        result = analysis.analyze_trace(
            restrict_to_env(trace, env), window_s=window_s, rules_dirs=rules_dirs, progress=_side_progress(progress, f"env {env}")
        )
        sides.append(_side_of(result, env))
    base, cand = sides
    (progress or _quiet)("comparing")
    return _compare(base, cand, rules_dirs)


def trace_envs(trace: ValidatedTrace) -> list[str]:
    """The trace's `env` values, ordered by the median time of their rows (then by name)."""
    parts = [
        frame.lazy().filter(pl.col("env").is_not_null()).select(pl.col("env").cast(pl.String), "ts")
        for frame in trace.layers.values()
        if "env" in frame.columns and frame.height
    ]
    if not parts:
        return []
    order = pl.concat(parts).group_by("env").agg(pl.col("ts").median().alias("at")).sort("at", "env").collect()
    return order["env"].to_list()


def restrict_to_env(trace: ValidatedTrace, env: str) -> ValidatedTrace:
    """The rows of one environment: rows with that `env`, rows with no `env`, and every
    `device_info` row. Device attributes hold for the whole trace whatever env a device was
    first seen in; a device_info row's `ts` (first seen) is moved up to the env's first row so
    that the attributes do not stretch the env's observation span back to the trace start."""
    is_info = pl.col("event").cast(pl.String) == "device_info"
    in_env = pl.col("env").is_null() | (pl.col("env").cast(pl.String) == env)
    layers = {
        name: frame.filter(in_env | is_info) if "env" in frame.columns else frame for name, frame in trace.layers.items()
    }
    # `ts` is Int64 ns (validated): the minimum of a non-empty column is an int.
    minima = [f.filter(~is_info)["ts"].min() for f in layers.values() if f.height and "ts" in f.columns]
    starts = [cast(int, s) for s in minima if s is not None]
    if starts and "gpu" in layers:
        first = min(starts)
        layers["gpu"] = layers["gpu"].with_columns(
            pl.when(is_info & (pl.col("ts") < first)).then(pl.lit(first, pl.Int64)).otherwise(pl.col("ts")).alias("ts")
        )
    return ValidatedTrace(
        source=trace.source,
        layers=layers,
        rows_total=sum(f.height for f in layers.values()),
        rows_by_layer={name: f.height for name, f in layers.items()},
        audit=trace.audit,  # set-aside rows cannot be attributed to an env: the whole trace's audit
    )


def compare_analyses(base: analysis.Analysis, candidate: analysis.Analysis, *, rules_dirs: list[Path] | None = None) -> Comparison:
    """Compare two finished analyses of whole traces (one baseline analyzed once, compared with
    many candidates: `coherence-diag report --baseline`)."""
    return _compare(_side_of(base, None), _side_of(candidate, None), rules_dirs)


def _side_of(result: analysis.Analysis, env: str | None) -> _SideAnalysis:
    facts = result.report.trace
    label = facts.path if env is None else f"{facts.path} [env={env}]"
    side = Side(label, facts.path, env, facts.rows, facts.requests, facts.start, facts.end)
    return _SideAnalysis(side, result)


def _compare(base: _SideAnalysis, cand: _SideAnalysis, rules_dirs: list[Path] | None) -> Comparison:
    from coherence_diag import __version__

    shifts = []
    latency_shift: dict[str, object] | None = None
    for signal, (slo, description) in SIGNALS.items():
        raw = distribution_shift(base.result.paths, cand.result.paths, value=signal, slo=slo)
        if signal == "latency_ms":
            latency_shift = raw
        shifts.append(_shift(signal, description, raw))
    steady = {s.signal for s in shifts if s.significant is False}
    return Comparison(
        base=base.side,
        candidate=cand.side,
        measures=measure_changes(base.result.report, cand.result.report, steady),
        components=component_changes(base.result.report, cand.result.report),
        shifts=tuple(shifts),
        findings=finding_changes(base.result.report.findings, cand.result.report.findings),
        pair_findings=tuple(_pair_findings(latency_shift or {}, base.side, cand.side, rules_dirs)),
        alpha=ALPHA,
        min_ks=MIN_KS,
        tool_version=__version__,
    )


def measure_changes(base: Report, candidate: Report, steady_signals: AbstractSet[str] = frozenset()) -> tuple[MeasureChange, ...]:
    """Every measure of the two reports: values, delta, relative change, better or worse.

    `steady_signals` are per-request signals (e.g. "latency_ms") whose distributions the shift
    tests found not to differ: their quantiles' moves are reported as "within noise".
    """
    out = []
    for m in measures.MEASURES.values():
        b, c = m.value(base), m.value(candidate)
        delta = c - b if b is not None and c is not None else None
        rel = measures.relative_change(b, c)
        change = _change(m, b, c)
        if change in ("better", "worse") and m.name.split(".")[0] in steady_signals:
            change = "within noise"
        out.append(MeasureChange(m.name, m.label, m.unit, m.better, b, c, delta, rel, change))
    return tuple(out)


def component_changes(base: Report, candidate: Report) -> tuple[ComponentChange, ...]:
    """The synchronization map (CI layers and links) and per-pool DI/HCL of both sides."""
    b, c = base.index_breakdown, candidate.index_breakdown
    out: list[ComponentChange] = []

    def add(kind: str, name: str, better: str, vb: float | None, vc: float | None) -> None:
        delta = vc - vb if vb is not None and vc is not None else None
        out.append(ComponentChange(kind, name, better, vb, vc, delta))  # type: ignore[arg-type]

    for kind, left, right in (("layer", b.layers, c.layers), ("link", b.links, c.links)):
        for name in [*left, *(n for n in right if n not in left)]:
            add(kind, name, "higher", left.get(name), right.get(name))
    for pool in sorted(set(b.pools) | set(c.pools)):
        for index in ("DI", "HCL"):
            add("pool", f"{pool}.{index}", "lower", b.pools.get(pool, {}).get(index), c.pools.get(pool, {}).get(index))
    return tuple(out)


def _change(m: measures.Measure, b: float | None, c: float | None) -> Change:
    if b is None or c is None:
        return "n/a"
    if m.unit in ("frac", "index") and abs(c - b) < UNCHANGED_ABS:
        return "unchanged"
    if m.better == "neither":
        rel = measures.relative_change(b, c)
        return "unchanged" if b == c or (rel is not None and abs(rel) < UNCHANGED_REL) else "changed"
    worse_by = measures.regression(m, b, c)
    if worse_by is None:  # a millisecond or rate measure that was 0: any move counts
        up_is_worse = m.better == "lower"
        return "unchanged" if c == b else ("worse" if (c > b) == up_is_worse else "better")
    # Fractions and indices at 0 are judged on the absolute change (regression() does so).
    if abs(worse_by) < UNCHANGED_REL:
        return "unchanged"
    return "worse" if worse_by > 0 else "better"


def _shift(signal: str, description: str, raw: Mapping[str, Any]) -> Shift:
    """`raw`: features/shift.py's distribution_shift() of one signal (numbers, None, token columns)."""
    values: dict[str, Any] = {f.name: raw.get(f.name) for f in fields(Shift) if f.name in raw}
    values["token_columns"] = tuple(raw.get("token_columns") or ())
    values["cells"] = int(raw.get("cells") or 0)
    values["matched"] = bool(raw.get("matched"))
    ks_stat, ks_p = raw.get("ks_stat"), raw.get("ks_p")
    significant: bool | None = None
    direction: Literal["slower", "faster", "none"] | None = None
    if ks_stat is not None and ks_p is not None:
        significant = bool(ks_p < ALPHA and ks_stat >= MIN_KS)
        effect = raw.get("mw_effect")
        if not significant or effect is None:
            direction = "none"
        else:
            direction = "slower" if effect > 0.5 else "faster"
    return Shift(signal=signal, description=description, significant=significant, direction=direction, **values)


def finding_changes(base: tuple[Finding, ...], candidate: tuple[Finding, ...]) -> tuple[FindingChange, ...]:
    """Findings paired by rule id: new in the candidate, resolved from the base, or persisting."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    b = {f.rule: f for f in base}
    c = {f.rule: f for f in candidate}
    out = []
    for rule in sorted(set(b) | set(c)):
        fb, fc = b.get(rule), c.get(rule)
        status = "persisting" if fb and fc else ("new" if fc else "resolved")
        shown = fc if fc is not None else b[rule]
        out.append(
            FindingChange(
                rule=rule,
                status=status,  # type: ignore[arg-type]
                kind=shown.kind,
                domain=shown.domain,
                severity_base=fb.severity if fb else None,
                severity_candidate=fc.severity if fc else None,
                score_base=fb.score if fb else None,
                score_candidate=fc.score if fc else None,
                summary=shown.summary,
            )
        )
    order = {"new": 0, "persisting": 1, "resolved": 2}
    out.sort(key=lambda f: (order[f.status], -rank[f.severity_candidate or f.severity_base or "low"], f.rule))
    return tuple(out)


def pair_rules(rules: list[Rule]) -> list[Rule]:
    """Rules that read only the environment-shift features: they judge a pair of sides."""
    shift_names = set(GROUPS[SHIFT_GROUP].outputs)
    return [r for r in rules if r.features and r.features <= shift_names]


def _pair_findings(latency_shift: dict[str, object], base: Side, cand: Side, rules_dirs: list[Path] | None) -> list[Finding]:
    rules = pair_rules(load_rules(list(rules_dirs or [])))
    values, evidence = shift_features(latency_shift)
    evidence = {"base": base.label, "candidate": cand.label, **evidence}
    # The same feature the environment_shift group hangs its evidence on. Its values are
    # numbers or None (features/environments.py), typed there as objects.
    features = FeatureValues(values=cast(dict[str, float | None], values), details={"env_shift_p99_ratio": evidence}, missing={})
    # The two sides *are* the two environments, so the `env` column these rules require is implied.
    columns = {c for r in rules for c in r.requires}
    findings, _evaluability = engine.evaluate(rules, features, columns)
    return findings
