"""Check a trace against the declared schema and split it into clean per-layer tables.

Every problem is collected into one audit table (file, layer, reason, column, rows, examples)
instead of stopping at the first one. Rows with a problem are set aside and counted; the trace
is rejected (TraceError, exit 2) only when it is unusable: a required column is missing, no
usable row is left, or more rows were set aside than the caller tolerates (`max_bad_fraction`).
Rows of unknown layers or events are set aside as warnings (trace-format.md) and never count
against that budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

import polars as pl
from polars.expr.whenthen import ChainedThen, Then

from coherence_diag import request_keys, schema
from coherence_diag.errors import TraceError
from coherence_diag.ingest import source as sources
from coherence_diag.ingest.files import FileSource
from coherence_diag.ingest.source import ORIGIN, RECORD, TraceSource

# Reason codes of the audit table and what each means to a user.
REASONS: dict[str, str] = {
    "unknown_layer": "layer is not one of " + ", ".join(schema.LAYERS),
    "unknown_event": "event is not defined for its layer",
    "bad_timestamp": "ts is missing or not a valid timestamp",
    "missing_value": "a value this event requires is missing",
    "invalid_duration": "duration is NaN, infinite or negative (expected finite milliseconds >= 0)",
    "fraction_out_of_range": "fraction is NaN or outside [0, 1]",
    "negative_count": "count is negative",
    "invalid_number": "value is NaN or infinite",
    "bad_value": "value is not one of the allowed values",
    "duplicate_row": "row is an exact duplicate of an earlier row",
    "completion_before_arrival": "request completes before it arrives (all its scheduler rows set aside)",
    # Physical bounds of numeric columns (schema.BOUNDS): one code per family of columns.
    **{b.reason: f"{b.problem} (expected {b.expected})" for b in schema.BOUNDS.values()},
    # Input records a source adapter could not map (ingest/source.py), in the same table.
    **sources.REASONS,
}
WARNING_REASONS = frozenset({"unknown_layer", "unknown_event"}) | sources.WARNING_REASONS

DEFAULT_MAX_BAD_FRACTION = 0.01
_EXAMPLES = sources.EXAMPLES


@dataclass
class ValidatedTrace:
    source: TraceSource
    layers: Mapping[str, pl.DataFrame]  # clean rows of each layer present, internal columns dropped
    rows_total: int
    rows_by_layer: dict[str, int]  # rows read per known layer, before any was set aside
    audit: pl.DataFrame  # one row per (file, layer, reason, column): rows, example_rows, warning
    # Clean rows per layer, whether or not `layers` keeps them (a LayerKeeper may keep them elsewhere).
    usable_by_layer: dict[str, int] = field(default_factory=dict)

    @property
    def columns(self) -> set[str]:
        return self.source.columns

    def set_aside_counts(self) -> dict[str, int]:
        """Rows set aside per `reason:column`, for the report."""
        if self.audit.is_empty():
            return {}
        agg = self.audit.group_by("reason", "column").agg(pl.col("rows").sum()).sort("reason", "column")
        return {
            (f"{r}:{c}" if c else r): int(n) for r, c, n in agg.iter_rows()
        }


def validate(
    source: TraceSource, *, max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION, keep: LayerKeeper | None = None
) -> ValidatedTrace:
    """`keep`: see `validate_rows`."""
    result = validate_rows(source, keep=keep)
    _enforce_budget(result, max_bad_fraction)
    return result


# Called with each layer's name and clean rows as soon as they are checked; the trace keeps what
# it returns instead (None: nothing). The single pass keeps only what is read after the request
# paths (analysis.py), so that the full layers are never all in memory at once.
LayerKeeper = Callable[[str, pl.DataFrame], pl.DataFrame | None]


def validate_rows(source: TraceSource, *, keep_order: bool = False, keep: LayerKeeper | None = None) -> ValidatedTrace:
    """`validate` without the --max-bad-fraction budget: for a work unit (scale/units.py), whose
    rows are part of a trace and whose budget is checked on the counters summed over all units.
    `keep_order`: the clean layers keep ORIGIN and RECORD (file and row of each row), by which
    the units' rows are put back in the trace's order (scale/reduce.py). `keep`: LayerKeeper,
    called only while every layer so far has the columns its events require."""
    lf = source.scan()
    present = source.columns
    # The row count of a Parquet trace comes from its metadata; every known layer is read in
    # one pass (a layer that is absent costs a filter, or nothing where row-group statistics
    # rule it out), and rows of no known layer are what the layers do not account for.
    unmapped = source.unmapped()
    rows_total = int(_collect(source, lf.select(pl.len())).item()) + int(unmapped["rows"].sum())
    if rows_total == 0:
        raise TraceError(f"{source.display_path}: the trace has no rows", path=source.display_path)
    single = source.single_text
    plans = [_layer_plan(lf, layer, present, single, provenance=keep_order) for layer in schema.LAYERS]

    audits: list[pl.DataFrame] = [unmapped] if not unmapped.is_empty() else []
    events: dict[str, pl.DataFrame] = {}  # each layer's event values, for require_columns
    clean: dict[str, pl.DataFrame] = {}
    rows_by_layer: dict[str, int] = {}
    usable_by_layer: dict[str, int] = {}
    # Parquet and frames: one layer after the other, each scan reading only its layer's columns and
    # rows, so that one layer's buffers are in flight at a time (10M rows: peak 1.70 -> 1.34 GiB and
    # about a third less CPU than the five scans side by side in one collect_all). CSV: one
    # collect_all, so that the text is parsed once.
    read_all: list[pl.DataFrame | None] | None = None if _rescan_is_cheap(source) else list(_collect_all(source, plans))
    for i, layer in enumerate(schema.LAYERS):
        if read_all is None:
            frame = _collect(source, plans[i])
        else:
            frame, read_all[i] = cast(pl.DataFrame, read_all[i]), None
        if not frame.height:
            continue
        rows_by_layer[layer] = frame.height
        events[layer] = frame.select(pl.col("event").unique())
        if missing_required(events, present):
            continue  # require_columns rejects the trace below: no point checking its rows
        cleaned = _clean_layer(source, lf, frame, layer, present, single, keep_order, audits)
        usable_by_layer[layer] = cleaned.height
        kept = cleaned if keep is None else keep(layer, cleaned)
        # The layer's rows as read and its clean rows, unless kept: freed before the next layer is read.
        del frame, cleaned
        if kept is not None:
            clean[layer] = kept
    require_columns(source, events, present)
    if rows_total - int(unmapped["rows"].sum()) > sum(rows_by_layer.values()):
        audits.append(_unknown_layer_audit(lf, source))

    audit = (
        pl.concat(audits, how="vertical_relaxed") if audits else _empty_audit()
    ).sort("file", "layer", "reason", "column")
    return ValidatedTrace(source, clean, rows_total, rows_by_layer, audit, usable_by_layer)


def _clean_layer(
    source: TraceSource,
    lf: pl.LazyFrame,
    frame: pl.DataFrame,
    layer: str,
    present: set[str],
    single: dict[str, str],
    keep_order: bool,
    audits: list[pl.DataFrame],
) -> pl.DataFrame:
    """The layer's rows without those with a problem (whose audit is appended to `audits`)."""
    # The checks compare whole rows (exact duplicates): file and row are not part of them.
    order = frame.select(ORIGIN, RECORD) if keep_order else None
    checked = _mark_problems(frame if order is None else frame.drop(ORIGIN, RECORD), layer, present)
    if layer == "scheduler":
        checked = _mark_inconsistent_requests(checked)
    bad = checked["_problem"].is_not_null()
    if bad.any() or order is not None:
        # Only a layer with problems pays for provenance (file and row of each row): the
        # same plan read again, in the same order, for the audit's file names and examples.
        if order is None:
            order = _collect(source, _layer_plan(lf, layer, present, single, provenance=True).select(ORIGIN, RECORD))
        checked = checked.with_columns(order)
        if bad.any():
            audits.append(_audit(checked, layer, source))
            checked = checked.filter(~bad)
        if not keep_order:
            checked = checked.drop(ORIGIN, RECORD)
    # Units' layers are concatenated (materialising scalars): they stay plain columns there.
    return checked.drop("_problem") if keep_order else constants_as_scalars(checked.drop("_problem"))


# --- plans -------------------------------------------------------------------------------


def _layer_plan(
    lf: pl.LazyFrame, layer: str, present: set[str], single: dict[str, str], *, provenance: bool = False
) -> pl.LazyFrame:
    cols = [e for c in schema.LAYER_COLUMNS[layer] for e in _layer_columns(c, present, layer, single)]
    extra = [ORIGIN, RECORD] if provenance else []
    return lf.filter(pl.col("layer") == layer).select(*cols, *extra)


def _layer_columns(name: str, present: set[str], layer: str, single: dict[str, str]) -> list[pl.Expr]:
    dtype = schema.dtype_of(name)
    expr = pl.col(name) if name in present else pl.lit(None, dtype).alias(name)
    if name in single and name != "request_id":
        # One value on every row (Parquet statistics): a constant, not a per-row category lookup.
        return [pl.lit(single[name]).cast(pl.Categorical).alias(name)]
    if name == "request_id":
        # Request-level group-bys and joins use integer keys (request_keys.py); the id text is
        # kept where requests are defined, the scheduler layer, for the request table.
        key = request_keys.hashed_key(expr)
        return [expr, key] if layer == "scheduler" else [key]
    # Names become Categorical once, here: every later group-by, join and equality test on
    # them then works on integer codes instead of hashing strings again.
    return [expr.cast(pl.Categorical) if dtype == pl.String else expr]


def constants_as_scalars(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with every column that holds one value on all its rows (or only nulls) as a
    literal: Polars keeps a literal column as one value and a length (a scalar column), not a
    value per row. A layer keeps such columns for its whole analysis (an `env` label, a column
    another layer fills, `attempt` 0 throughout): ~130 MiB of a 10M-row trace's ~1 GiB. The
    values are the same; operations that need them per row expand them as they go."""
    constants = []
    for column in frame.iter_columns():
        is_constant, value = constant_value(column)
        if is_constant:
            constants.append(pl.lit(value, column.dtype).alias(column.name))
    return frame.with_columns(constants) if constants else frame


def constant_value(column: pl.Series) -> tuple[bool, object]:
    """(True, the value) when `column` holds one value on all its rows (None: only nulls), as
    `constants_as_scalars` keeps it; (False, None) otherwise (ids and keys are only when null
    throughout)."""
    if column.null_count() == len(column):
        return True, None  # of any type: a request key on rows of an event without requests
    if column.dtype in (pl.String, pl.Int128) or column.dtype.is_nested():
        return False, None  # ids and keys: distinct per request
    if not column.null_count() and _one_value(column):
        return True, column[0]
    return False, None


def _one_value(column: pl.Series) -> bool:
    """min == max on a column without nulls (of a Categorical: of its codes, one per name)."""
    values = column.to_physical() if column.dtype == pl.Categorical else column
    if values.min() != values.max():
        return False
    if values.dtype.is_float():
        # min/max skip NaN, and -0.0 == 0.0 though they print differently: the same bits only.
        return not values.is_nan().any() and (values[0] != 0.0 or (1.0 / values).n_unique() == 1)
    return True


def _rescan_is_cheap(source: TraceSource) -> bool:
    """Scanning the source once per layer costs little: Parquet files (column and row-group
    pruning) or frames in memory; not CSV text, which would be parsed again for every layer."""
    return not (isinstance(source, FileSource) and any(f.fmt == "csv" for f in source.files))


def _collect(source: TraceSource, lf: pl.LazyFrame) -> pl.DataFrame:
    return _collect_all(source, [lf])[0]


def _collect_all(source: TraceSource, plans: list[pl.LazyFrame]) -> list[pl.DataFrame]:
    try:
        return pl.collect_all(plans)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise _attribute_read_error(source, exc) from None


def _attribute_read_error(source: TraceSource, exc: BaseException) -> TraceError:
    """A decode error surfaced while reading: the source knows which of its inputs causes it."""
    return source.read_error(exc)


# --- row checks ------------------------------------------------------------------------------


def _problem_exprs(layer: str, present: set[str]) -> list[tuple[pl.Expr, str]]:
    """(condition, reason:column) pairs, in the order a row's first problem is reported."""
    checks: list[tuple[pl.Expr, str]] = [(pl.col("ts").is_null(), "bad_timestamp:ts")]
    checks.append((~pl.col("event").is_in(schema.EVENTS[layer]) | pl.col("event").is_null(), "unknown_event:event"))
    for (req_layer, event), cols in schema.REQUIRED_VALUES.items():
        if req_layer != layer:
            continue
        applies = pl.lit(True) if event == "*" else pl.col("event") == event
        for required in cols:
            names = schema.alternatives(required)
            none_given = pl.all_horizontal([pl.col(c).is_null() for c in names])
            checks.append((applies & none_given, f"missing_value:{names[0]}"))
    for c in schema.LAYER_COLUMNS[layer]:
        if c not in present:
            continue
        x = pl.col(c)
        kind = schema.COLUMNS[c].kind
        if kind == "duration_ms":
            checks.append((x.is_not_null() & ~(x.is_finite() & (x >= 0)), f"invalid_duration:{c}"))
        elif kind == "fraction":
            checks.append(
                (x.is_not_null() & ~(x.is_finite() & (x >= 0) & (x <= 1)), f"fraction_out_of_range:{c}")
            )
        elif kind == "count":
            checks.append((x.is_not_null() & (x < 0), f"negative_count:{c}"))
        elif kind == "float":
            checks.append((x.is_not_null() & ~x.is_finite(), f"invalid_number:{c}"))
        bound = schema.BOUNDS.get(c)
        if bound is not None:  # after the kind's check: NaN and infinity keep their own reason
            outside = (x > bound.high) if bound.low is None else ((x > bound.high) | (x < bound.low))
            checks.append((x.is_not_null() & outside, f"{bound.reason}:{c}"))
        if c in schema.ALLOWED_VALUES:
            checks.append((x.is_not_null() & ~x.is_in(schema.ALLOWED_VALUES[c]), f"bad_value:{c}"))
    return checks


def _mark_problems(frame: pl.DataFrame, layer: str, present: set[str]) -> pl.DataFrame:
    """Add `_problem` (reason:column of the row's first problem, else null)."""
    checks = _problem_exprs(layer, present)
    any_problem = pl.any_horizontal([cond.fill_null(False) for cond, _ in checks])
    duplicate = _later_duplicates(frame, layer)
    flagged = frame.select(any_problem.alias("p")).to_series() | duplicate
    if not flagged.any():  # the common case: a clean layer costs one vectorised pass
        return frame.with_columns(pl.lit(None, pl.String).alias("_problem"))
    chain: Then | ChainedThen = pl.when(checks[0][0]).then(pl.lit(checks[0][1]))
    for cond, reason in checks[1:]:
        chain = chain.when(cond).then(pl.lit(reason))
    problem = chain.when(duplicate).then(pl.lit("duplicate_row:")).otherwise(pl.lit(None, pl.String))
    return frame.with_columns(pl.when(flagged).then(problem).alias("_problem"))


def _later_duplicates(data: pl.DataFrame, layer: str) -> pl.Series:
    """True for every exact duplicate of an earlier row (the first occurrence is kept).

    Hashes of the identity columns find candidates cheaply; candidates are then compared on
    every column, so neither a hash collision nor a partial match can set a row aside.
    """
    no_duplicates = pl.zeros(data.height, dtype=pl.Boolean, eager=True)
    # The integer key stands for the id text here: equal ids have equal keys, and candidates
    # are compared on every column below.
    identity = [request_keys.KEY if c == "request_id" else c for c in schema.IDENTITY_COLUMNS[layer]]
    key = _time_entity_key(data, layer)
    if key is not None and _rises_within_each_event(key, data["event"]):
        return no_duplicates  # the cheapest proof, before any pairing or hashing
    paired = _duplicates_in_pairs(data, identity)
    if paired is not None:
        return paired
    scope = _shared_timestamps(data)
    if scope is None and key is not None and key.n_unique() == data.height:
        return no_duplicates
    subset = data if scope is None else data.filter(scope)
    if subset.height < 2:
        return no_duplicates
    hashes = subset.select(identity).hash_rows()
    if hashes.n_unique() == subset.height:  # no equal hashes: no duplicates (the common case)
        return no_duplicates
    candidates = hashes.is_duplicated()
    exact_later = subset.filter(candidates).select(~pl.struct(data.columns).is_first_distinct()).to_series()
    positions = candidates.arg_true()  # filters keep row order, so "first" is still the earliest row
    if scope is not None:
        positions = scope.arg_true().gather(positions)
    return no_duplicates.scatter(positions.filter(exact_later), True)


def _duplicates_in_pairs(data: pl.DataFrame, identity: list[str]) -> pl.Series | None:
    """Later duplicates of a layer sorted by `ts`; None for any other layer.

    Duplicates share their timestamp, so in a sorted layer they lie in one run of equal `ts`.
    A run of two is one pair of neighbours, compared directly: column by column over the pairs
    still equal, from the identity columns (most pairs differ in `event` already) to every
    column. The few runs of three or more are hashed as before. No hashing of the pairs
    (scheduler layer at 4.4M rows, a quarter of them in such pairs: 0.07 -> 0.02 s).
    """
    ts = data["ts"]
    if data.height < 2 or ts.null_count() or not ts.is_sorted():
        return None
    same_as_previous = (ts.diff() == 0).fill_null(False)
    in_long_run = same_as_previous & same_as_previous.shift(1, fill_value=False)  # 3rd+ row of a run
    in_long_run = in_long_run | in_long_run.shift(-1, fill_value=False) | in_long_run.shift(-2, fill_value=False)
    flags = pl.zeros(data.height, dtype=pl.Boolean, eager=True)
    pairs = (same_as_previous & ~in_long_run).arg_true()  # second rows of runs of two
    others = [c for c in (*identity, *data.columns) if c != "ts"]
    for column in dict.fromkeys(others):  # identity columns first, each column once
        if pairs.is_empty():
            break
        values = data[column]
        pairs = pairs.filter(values.gather(pairs).eq_missing(values.gather(pairs - 1)))
    if not pairs.is_empty():
        flags = flags.scatter(pairs, True)
    if in_long_run.any():
        rows = in_long_run.arg_true()
        run = data.filter(in_long_run)
        later = run.select(~pl.struct(run.columns).is_first_distinct()).to_series()
        flags = flags.scatter(rows.filter(later), True)
    return flags


def _time_entity_key(data: pl.DataFrame, layer: str) -> pl.Series | None:
    """One packed Int64 per row, (ts - min) x category codes + the code of the layer's entity
    column (`_TIME_ENTITY`; `ts` and the entity are identity columns): rows of one event with
    distinct keys cannot be duplicates. None (hash instead) when the layer has no such entity,
    the entity or the event has nulls, the entity is not Categorical, or the key could overflow.

    Telemetry usually writes each event's rows in (time, entity) order: the key then rises
    strictly within each event (`_rises_within_each_event`: one filter per event, 0.04 s on
    4.7M GPU rows, where the pairs of a time-sorted layer hash their long runs of equal `ts`:
    0.12 s for 857k hypervisor samples of many devices at each tick). Else an integer n_unique
    of the key over the layer (≈0.2 s; stricter, as it ignores the event), against ≈0.3 s for
    hashing every row's identity columns.
    """
    entity = _TIME_ENTITY.get(layer)
    if entity is None or entity not in data.columns or data[entity].dtype != pl.Categorical:
        return None
    ts, codes = data["ts"], data[entity].to_physical().cast(pl.Int64)
    if ts.null_count() or codes.null_count() or data["event"].null_count() or data.height < 2:
        return None
    # Int64 columns without nulls (checked above): their extremes are ints.
    lo, hi, top = cast(int, ts.min()), cast(int, ts.max()), cast(int, codes.max())
    if (hi - lo + 1) * (top + 1) >= 1 << 62:
        return None
    return (ts - lo) * (top + 1) + codes


def _rises_within_each_event(key: pl.Series, event: pl.Series) -> bool:
    return all(rises_strictly(key.filter(event == value)) for value in event.unique())


def rises_strictly(values: pl.Series) -> bool:
    """Each value of the integer column `values` (without nulls) above the one before it."""
    return values.len() < 2 or cast(int, values.diff().min()) > 0


# The entity whose rows a layer's timestamps are per (one GPU sample or span per device and
# instant, one network row per link and instant, one hypervisor sample per device and instant):
# usually distinct together with `ts`.
_TIME_ENTITY: dict[str, str] = {"gpu": "device", "network": "link", "hypervisor": "device"}


def _shared_timestamps(data: pl.DataFrame) -> pl.Series | None:
    """Rows whose `ts` equals a neighbour's, when `ts` is sorted and has no nulls; else None.

    Exact duplicates share their timestamp, so in a time-ordered layer (traces usually are) only
    rows in a run of equal timestamps can be duplicates: a vectorised pass over `ts` spares
    hashing every row of a layer whose timestamps are mostly distinct.
    """
    ts = data["ts"]
    if ts.null_count() or not ts.is_sorted():
        return None
    same_as_previous = (ts.diff() == 0).fill_null(False)
    return same_as_previous | same_as_previous.shift(-1, fill_value=False)


def _mark_inconsistent_requests(frame: pl.DataFrame) -> pl.DataFrame:
    ok = pl.col("_problem").is_null()
    key = request_keys.KEY
    bounds = (
        frame.lazy()
        .select(key, "event", "ts", "_problem")  # narrow first: filters gather only these
        .filter(ok & pl.col("event").is_in(["arrive", "complete"]))
        .group_by(key)
        .agg(
            pl.when(pl.col("event") == "arrive").then(pl.col("ts")).min().alias("first_arrive"),
            pl.when(pl.col("event") == "complete").then(pl.col("ts")).max().alias("last_complete"),
        )
        .collect()
    )
    bad = bounds.filter(pl.col("last_complete") < pl.col("first_arrive"))[key]
    if bad.is_empty():
        return frame
    return frame.with_columns(
        pl.when(ok & pl.col(key).is_in(bad.implode()))
        .then(pl.lit("completion_before_arrival:ts"))
        .otherwise(pl.col("_problem"))
        .alias("_problem")
    )


# --- audit -----------------------------------------------------------------------------------


def _audit(checked: pl.DataFrame, layer: str, source: TraceSource) -> pl.DataFrame:
    bad = checked.filter(pl.col("_problem").is_not_null())
    if bad.is_empty():
        return _empty_audit()
    names = _file_names(source)
    return (
        bad.group_by(ORIGIN, "_problem")
        .agg(pl.len().alias("rows"), pl.col(RECORD).sort().head(_EXAMPLES).alias("example_rows"))
        .with_columns(
            pl.col(ORIGIN).replace_strict(names, return_dtype=pl.String).alias("file"),
            pl.lit(layer).alias("layer"),
            pl.col("_problem").str.split_exact(":", 1).struct.field("field_0").alias("reason"),
            pl.col("_problem").str.split_exact(":", 1).struct.field("field_1").alias("column"),
        )
        .with_columns(pl.col("reason").is_in(list(WARNING_REASONS)).alias("warning"))
        .select(_AUDIT_COLUMNS)
    )


def _file_names(source: TraceSource) -> dict[int, str]:
    return dict(enumerate(source.origins))


_AUDIT_COLUMNS = ["file", "layer", "reason", "column", "rows", "example_rows", "warning"]


def _empty_audit() -> pl.DataFrame:
    return sources.empty_audit()


def _unknown_layer_audit(lf: pl.LazyFrame, source: TraceSource) -> pl.DataFrame:
    known = pl.col("layer").is_in(schema.LAYERS)
    names = _file_names(source)
    bad = _collect(
        source,
        lf.filter(~known | pl.col("layer").is_null())
        .group_by(ORIGIN, "layer")
        .agg(pl.len().alias("rows"), pl.col(RECORD).sort().head(_EXAMPLES).alias("example_rows")),
    )
    return bad.select(
        pl.col(ORIGIN).replace_strict(names, return_dtype=pl.String).alias("file"),
        pl.col("layer").fill_null("<null>"),
        pl.lit("unknown_layer").alias("reason"),
        pl.lit("layer").alias("column"),
        pl.col("rows").cast(pl.UInt32),
        pl.col("example_rows").cast(pl.List(pl.UInt32)),
        pl.lit(True).alias("warning"),
    )


def require_columns(source: TraceSource, layers: Mapping[str, pl.DataFrame], present: set[str]) -> None:
    """A layer/event that is present needs its required columns to exist somewhere in the trace
    (`layers`: frames with at least each layer's `event` column)."""
    problems = missing_required(layers, present)
    if problems:
        unique = sorted(set(problems))
        if len(unique) == 1:
            raise TraceError(f"{source.display_path}: {unique[0]}", path=source.display_path)
        body = "\n".join(f"  - {p}" for p in unique)
        raise TraceError(f"{source.display_path}: {len(unique)} problems found:\n{body}", path=source.display_path)


def missing_required(layers: Mapping[str, pl.DataFrame], present: set[str]) -> list[str]:
    """What `require_columns` reports: one line per required column that no trace column gives."""
    problems = []
    pairs = {(layer, event) for layer, frame in layers.items() for event in frame["event"].unique().to_list()}
    for (layer, event), cols in schema.REQUIRED_VALUES.items():
        if not any(lay == layer and (event == "*" or e == event) for lay, e in pairs):
            continue
        for required in cols:
            if not any(c in present for c in schema.alternatives(required)):
                what = f"{layer} rows" if event == "*" else f"{layer} `{event}` rows"
                problems.append(f"missing required column {schema.describe_required(required)} (needed by {what})")
    return problems


def _enforce_budget(result: ValidatedTrace, max_bad_fraction: float) -> None:
    usable = sum(result.usable_by_layer.values())
    enforce_budget(result.audit, result.rows_total, usable, result.source.display_path, max_bad_fraction)


def enforce_budget(audit: pl.DataFrame, rows_total: int, usable: int, path: str, max_bad_fraction: float) -> None:
    """TraceError when no row is usable or more rows than tolerated were set aside (the audit's
    non-warning rows); also the global check of work units' summed counters (scale/reduce.py)."""
    bad_rows = int(audit.filter(~pl.col("warning"))["rows"].sum()) if not audit.is_empty() else 0
    too_many = bad_rows > max_bad_fraction * rows_total
    if usable > 0 and not too_many:
        return
    if usable == 0:
        headline = f"{path}: no usable rows (all {rows_total} rows were set aside)"
    else:
        headline = (
            f"{path}: {bad_rows} of {rows_total} rows ({bad_rows / rows_total:.1%}) are invalid, "
            f"more than the {max_bad_fraction:.1%} tolerated (--max-bad-fraction)"
        )
    raise TraceError(headline + ":\n" + format_audit(audit), path=path)


def format_audit(audit: pl.DataFrame, limit: int = 20) -> str:
    """The audit table as indented text lines: file, reason, column, row count, example rows."""
    lines = []
    ordered = audit.sort(["warning", "rows"], descending=[False, True])
    for row in ordered.head(limit).iter_rows(named=True):
        column = f" `{row['column']}`" if row["column"] else ""
        examples = ", ".join(str(r + 1) for r in row["example_rows"])
        what = REASONS.get(row["reason"], row["reason"])
        lines.append(
            f"  - {row['file']}: {row['rows']} {row['layer']} row(s){column}: {what} "
            f"[{row['reason']}] (e.g. data row {examples})"
        )
    if ordered.height > limit:
        lines.append(f"  - ... and {ordered.height - limit} more")
    return "\n".join(lines)
