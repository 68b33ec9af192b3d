"""The library entry point: trace path in, typed `Report` (plus the frames behind it) out.

    from coherence_diag import analyze
    result = analyze("trace.parquet")
    result.report.metrics.latency_ms.p99

Pipeline: ingest -> validate -> request paths -> metrics -> features -> indices -> rules.
No printing, no exiting: errors are raised as `coherence_diag.errors` exceptions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import polars as pl

from coherence_diag import __version__, features, indices, ingest, metrics, paths, projection, timeseries, validate
from coherence_diag.errors import InputError
from coherence_diag.layer_store import EventParts, Layers
from coherence_diag.model import Report, TraceFacts, iso_utc
from coherence_diag.rules import engine
from coherence_diag.rules.explain import RuleExplanation, explain_rule
from coherence_diag.rules.loader import Rule, find_rule, load_rules
from coherence_diag.scale import footers, layout
from coherence_diag.scale.read import ScaleOptions, read_in_units
from coherence_diag.summary import PathsRead, RowSummary, summarize, summarize_layer
from coherence_diag.summary import merge as merge_summaries

ProgressCallback = Callable[[str], None]


@dataclass
class Analysis:
    """A finished analysis: the report every output renders, and the frames it was built from."""

    report: Report
    paths: pl.DataFrame  # one row per request, keyed by `request_key` (paths.PATH_SCHEMA)
    # The validated trace, its layers projected to what is read after the request paths
    # (projection.py): the full frames are freed once the paths are built.
    trace: validate.ValidatedTrace
    # What the rules were evaluated over (rules.explain reads them): the feature values, the
    # trace's columns with those the analysis estimated, and how it estimated them.
    feature_values: features.FeatureValues | None = None
    columns: frozenset[str] = frozenset()
    derived: dict[str, str] = field(default_factory=dict)
    rules: tuple[Rule, ...] = ()  # the rules evaluated
    # The feature context the features and indices were computed in: the tables they share
    # (fleet windows, ...) stay cached in it for later readers of this trace (the report's visuals).
    context: features.FeatureContext | None = field(default=None, repr=False, compare=False)
    # Taken from every validated row before the projection: the observation span (the visuals'
    # time grid) and the id text of the requests (`requests`; paths.request_id_rows).
    span: metrics.ObservationSpan | None = None
    request_ids: pl.DataFrame | pl.LazyFrame | None = field(default=None, repr=False, compare=False)

    def explain(self, rule_id: str) -> RuleExplanation:
        """Why the rule `rule_id` did or did not fire on this trace, with its values
        (InputError naming the known rules when there is no such rule)."""
        if self.feature_values is None:
            raise ValueError("this analysis kept no feature values to explain")
        rule = find_rule(rule_id, list(self.rules))
        return explain_rule(rule, self.feature_values, self.columns, self.derived)

    @cached_property
    def requests(self) -> pl.DataFrame:
        """One row per request path with its `request_id` (docs/paths.md), built on first use."""
        ids = self.request_ids if self.request_ids is not None else self.trace.layers.get("scheduler")
        return paths.with_request_ids(self.paths, ids)

    @cached_property
    def series(self) -> timeseries.TimeSeries:
        """Windowed time series, built on first use (only consumers that need them pay)."""
        return timeseries.build(self.paths.lazy(), self.trace.layers, self.report.window_s)


def analyze(
    path: str | Path | ingest.TraceSource,
    *,
    window_s: float = timeseries.DEFAULT_WINDOW_S,
    max_bad_fraction: float = validate.DEFAULT_MAX_BAD_FRACTION,
    rules_dirs: list[Path] | None = None,
    progress: ProgressCallback | None = None,
    with_features: bool = False,
    scale: ScaleOptions | None = None,
) -> Analysis:
    """Read, validate and analyze the trace at `path`, or an opened source such as converted
    inputs (convert.open_sources) (`with_features`: the report lists every computed feature,
    `Report.features`). A trace larger than `scale`'s memory budget (or with a scheduler) is read
    in work units (scale/read.py); the report is the same as from one pass."""
    if not window_s > 0:  # checked before the (slow) read
        raise InputError(f"--window must be a positive number of seconds, got {window_s}")
    if not 0 <= max_bad_fraction <= 1:
        raise InputError(f"--max-bad-fraction must be in [0, 1], got {max_bad_fraction}")
    (progress or (lambda _msg: None))("reading and validating trace")
    # Handed on without a reference staying here: the analysis frees what it no longer reads.
    read = [read_for_analysis(path, window_s=window_s, max_bad_fraction=max_bad_fraction, scale=scale)]
    prepared = read.pop()
    return analyze_trace(
        prepared.trace,
        window_s=window_s,
        rules_dirs=rules_dirs,
        progress=progress,
        with_features=with_features,
        requests=prepared.requests,
        summary=prepared.summary,
    )


def read_for_analysis(
    path: str | Path | ingest.TraceSource,
    *,
    window_s: float = timeseries.DEFAULT_WINDOW_S,
    max_bad_fraction: float = validate.DEFAULT_MAX_BAD_FRACTION,
    scale: ScaleOptions | None = None,
) -> PathsRead:
    """The validated trace, projected, with its request paths and row summary: in work units when
    `scale` says so (scale/read.py), else in one pass (`read_single_pass`)."""
    in_units = read_in_units(path, scale or ScaleOptions(), window_s=window_s, max_bad_fraction=max_bad_fraction)
    return in_units if in_units is not None else read_single_pass(path, max_bad_fraction=max_bad_fraction)


def read_single_pass(
    path: str | Path | ingest.TraceSource, *, max_bad_fraction: float = validate.DEFAULT_MAX_BAD_FRACTION
) -> PathsRead:
    """Read and validate the trace, taking what the analysis needs of each layer as soon as that
    layer is validated (`_TakeAsValidated`): the full layers are never all in memory at once
    (10M rows: 1,053 MiB of full layers against 601 MiB projected)."""
    if not 0 <= max_bad_fraction <= 1:
        raise InputError(f"--max-bad-fraction must be in [0, 1], got {max_bad_fraction}")
    source = path if isinstance(path, ingest.TraceSource) else ingest.open_trace(path)
    take = _TakeAsValidated()
    trace = validate.validate(source, max_bad_fraction=max_bad_fraction, keep=take)
    # The projected layers behind the same interface as work units' (layer_store.Layers).
    layers = Layers(take.layers)
    requests = paths.finish_paths(take.lifecycle, layers)
    return PathsRead(dataclasses.replace(trace, layers=layers), requests, merge_summaries(take.summaries))


class _TakeAsValidated:
    """A validate.LayerKeeper: of each validated layer, the summary of its rows (summary.py) and,
    of the scheduler layer, the request lifecycle; the layer is then kept here projected
    (projection.py) and split by event (layer_store.EventParts), not in the validated trace.
    The request paths need no more of the other layers."""

    def __init__(self) -> None:
        self.lifecycle: pl.DataFrame | None = None
        self.summaries: list[RowSummary] = []
        self.layers: dict[str, pl.DataFrame | EventParts] = {}

    def __call__(self, name: str, frame: pl.DataFrame) -> None:
        if name == "scheduler":
            self.lifecycle = paths.scheduler_lifecycle(frame)
        self.summaries.append(summarize_layer(name, frame, self.lifecycle))
        projected = projection.project_layers({name: frame}).get(name)
        if projected is not None:
            self.layers[name] = EventParts.split(projected)


def read_trace(
    path: str | Path | ingest.TraceSource, *, max_bad_fraction: float = validate.DEFAULT_MAX_BAD_FRACTION
) -> validate.ValidatedTrace:
    """Open and validate a trace, keeping its full layers (raises InputError / TraceError on bad
    input); `analyze` reads with `read_for_analysis` instead."""
    if not 0 <= max_bad_fraction <= 1:
        raise InputError(f"--max-bad-fraction must be in [0, 1], got {max_bad_fraction}")
    source = path if isinstance(path, ingest.TraceSource) else ingest.open_trace(path)
    return validate.validate(source, max_bad_fraction=max_bad_fraction)


def analyze_trace(
    trace: validate.ValidatedTrace,
    *,
    window_s: float = timeseries.DEFAULT_WINDOW_S,
    rules_dirs: list[Path] | None = None,
    progress: ProgressCallback | None = None,
    with_features: bool = False,
    requests: pl.DataFrame | None = None,
    summary: RowSummary | None = None,
) -> Analysis:
    """Analyze an already validated trace; `requests`: its request table and `summary` the summary
    of its rows when they were built as the trace was read (`read_for_analysis`: its layers are
    then already projected). Given full layers (`read_trace`, as compare's env sides), the paths
    are built here and the full layers freed after them unless the caller still holds `trace`."""
    if not window_s > 0:
        raise InputError(f"--window must be a positive number of seconds, got {window_s}")
    step = progress or (lambda _msg: None)

    if requests is None:
        step("building request paths")
        requests = paths.request_paths(trace.layers)
    # What later readers need of every row, taken before the projection drops the rows and
    # columns no reader after the paths reads (projection.py; 10M rows: 1,053 -> 601 MiB).
    rows = summary or summarize(trace.layers, requests)
    span, envs, request_ids = rows.span, set(rows.envs), rows.request_ids
    if summary is None:
        trace = dataclasses.replace(trace, layers=Layers.in_parts(projection.project_layers(trace.layers)))

    step("computing metrics")
    metric_values, evaluability = metrics.compute(requests, trace.layers, trace.columns, span)

    step("computing features and indices")
    rule_set = load_rules(list(rules_dirs or []))
    ctx = features.FeatureContext.build(requests, trace.layers, trace.columns, metric_values, window_s)
    # Those the rules and indices read; every feature when the report lists them (`--features`).
    wanted = set(features.FEATURES) if with_features else set().union(*(r.features for r in rule_set)) | indices.FEATURES_USED
    values = features.compute(ctx, wanted)
    index_values, breakdown, index_evaluability = indices.compute(ctx, values)
    evaluability.update(index_evaluability)

    step("evaluating rules")
    findings, rule_evaluability = engine.evaluate(rule_set, values, ctx.columns, ctx.derived)
    evaluability.update(rule_evaluability)

    report = Report(
        trace=_facts(trace, requests, span, envs),
        metrics=metric_values,
        indices=index_values,
        findings=tuple(findings),
        evaluability=dict(sorted(evaluability.items())),
        window_s=window_s,
        tool_version=__version__,
        index_breakdown=breakdown,
        unexplained_indices=indices.unexplained(index_values, breakdown, findings, evaluability),
        features={name: values.reading(name) for name in sorted(values.values)} if with_features else None,
        provenance=trace.source.provenance,
    )
    return Analysis(
        report=report, paths=requests, trace=trace, feature_values=values, columns=frozenset(ctx.columns), derived=dict(ctx.derived),
        rules=tuple(rule_set), context=ctx, span=span, request_ids=request_ids,
    )


def _facts(trace: validate.ValidatedTrace, requests: pl.DataFrame, span: metrics.ObservationSpan, envs: set[str]) -> TraceFacts:
    warnings = tuple(
        f"{row['rows']} {row['layer']} row(s) set aside: {validate.REASONS[row['reason']]}"
        for row in trace.audit.filter(pl.col("warning"))
        .group_by("layer", "reason")
        .agg(pl.col("rows").sum())
        .sort("layer", "reason")
        .iter_rows(named=True)
    ) + _layout_notes(trace)
    return TraceFacts(
        path=trace.source.display_path,
        rows=trace.rows_total,
        layers=dict(sorted(trace.rows_by_layer.items())),
        envs=tuple(sorted(envs)),
        start=None if span.start_ns is None else iso_utc(span.start_ns),
        end=None if span.end_ns is None else iso_utc(span.end_ns),
        requests=requests.height,
        duration_s=span.seconds,
        columns=tuple(sorted(trace.columns)),
        set_aside=trace.set_aside_counts(),
        warnings=warnings,
    )


def _layout_notes(trace: validate.ValidatedTrace) -> tuple[str, ...]:
    """A note when a large trace's files force full scans (scale/layout.py; only past
    layout.NOTE_MIN_ROWS rows, so small traces never pay for reading their footers again)."""
    source = trace.source
    if not isinstance(source, ingest.FileSource) or trace.rows_total < layout.NOTE_MIN_ROWS:
        return ()
    note = layout.full_scan_note(layout.check_layout(footers.read_footers(source)), trace.rows_total, source.display_path)
    return () if note is None else (note,)
