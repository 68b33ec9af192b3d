"""The feature registry: named, documented scalar measurements that rules and indices read.

A feature group is one function that computes several related features from a
`FeatureContext` (they share intermediate tables). Each feature declares its unit (one of
UNITS), meaning and the trace columns it needs; a feature whose columns are missing is not
computed and is `None`, and the rules that read it report those columns as what would make them
evaluable. A group returns values only for the features it declares (anything else is a bug),
and says why each feature it leaves undefined is undefined (a `reason`), or which columns would
define it (`missing`); a feature it leaves undefined without either gets the reason
"not computed by <group>".

Groups may also return *details*: structured evidence (pool and device names, time windows)
that findings quote next to the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Iterable, Mapping, TypeVar

import polars as pl

from coherence_diag.layer_store import Layers
from coherence_diag.features.service_model import PREDICTED_ESTIMATE, estimate_predicted
from coherence_diag.metrics import Metrics
from coherence_diag.model import FeatureReading
from coherence_diag.paths import is_inference
from coherence_diag import timeseries
from coherence_diag.timeseries import TimeSeries

Number = float | None
T = TypeVar("T")

# The sample signals in the feature context's device series: none. Burst, fleet and service read
# busy_ms only, and energy joins its inference devices' power_w windows to the busy windows
# itself (energy._power_windows) and frees them: with a signal the table has a row per device and
# sampled window (29M at 100M trace rows; its build added 3.7 GB there), without, a row per busy
# window. The analysis's own series (Analysis.series: visuals, exports) keeps every signal.
SERIES_DEVICE_SIGNALS: tuple[str, ...] = ()

# The units a feature may declare: a share in [0, 1], a ratio of like quantities, milliseconds,
# a count, a (rank) correlation, a p-value, events per minute.
UNITS = ("frac", "ratio", "ms", "count", "corr", "p", "per_min")


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    unit: str  # one of UNITS
    description: str
    requires: tuple[str, ...]  # trace columns needed
    group: str = ""


@dataclass
class FeatureContext:
    """Everything a feature may read. Tables are built lazily and cached."""

    requests: pl.DataFrame
    layers: Layers  # projected (projection.py), in memory or on disk (layer_store.py)
    columns: set[str]
    metrics: Metrics
    window_s: float
    series_factory: Callable[[], TimeSeries]
    # Trace columns the context estimated from weaker telemetry -> how (see service_model.py).
    derived: dict[str, str] = field(default_factory=dict)
    _shared: dict[str, object] = field(default_factory=dict, repr=False)

    def shared(self, name: str, build: Callable[[], T]) -> T:
        """`build()`, run once per context: a table that several feature groups read."""
        if name not in self._shared:
            self._shared[name] = build()
        return self._shared[name]  # type: ignore[return-value]

    @classmethod
    def build(
        cls, requests: pl.DataFrame, layers: Mapping[str, pl.DataFrame], columns: set[str], metrics: Metrics, window_s: float
    ) -> "FeatureContext":
        """The context of one analysis; its time series are built on first use.

        Without a scheduler prediction (`predicted_ms`), the expected service time of each
        request is estimated from the fleet's token-normalised service time (service_model.py),
        so that features comparing realized with expected service still measure something; the
        context records the estimate in `derived`."""
        derived: dict[str, str] = {}
        layers = Layers.of(layers)
        if "predicted_ms" not in columns:
            estimated = estimate_predicted(requests, layers)
            if estimated is not None:
                requests, layers = estimated
                columns = columns | {"predicted_ms"}
                derived["predicted_ms"] = PREDICTED_ESTIMATE
        return cls(
            requests=requests,
            layers=layers,
            columns=columns,
            metrics=metrics,
            window_s=window_s,
            series_factory=lambda: timeseries.build(requests.lazy(), layers, window_s, device_signals=SERIES_DEVICE_SIGNALS),
            derived=derived,
        )

    @cached_property
    def series(self) -> TimeSeries:
        return self.series_factory()

    @cached_property
    def inference(self) -> pl.DataFrame:
        return leading_rows(self.requests, is_inference())

    @cached_property
    def completed(self) -> pl.DataFrame:
        return leading_rows(self.inference, pl.col("outcome") == "completed")

    def layer(
        self, name: str, columns: Iterable[str] | None = None, *, events: Iterable[str] | None = None, ordered: bool = True
    ) -> pl.DataFrame | None:
        """Layer `name`'s rows (of `events` when given) with those of `columns` it has (every
        column when None: avoid, a layer may be on disk); None when the trace has no such rows.
        Ask for what you read: a large trace's layers are read from disk, one column at a time.
        `ordered=False`: events' rows not interleaved as in the layer (Layers.read)."""
        if not self.layers.has_rows(name):
            return None
        return self.layers.read(name, columns, events=events, ordered=ordered)

    def has_layer(self, name: str) -> bool:
        """The trace has rows of layer `name`."""
        return self.layers.has_rows(name)


def leading_rows(frame: pl.DataFrame, condition: pl.Expr) -> pl.DataFrame:
    """`frame.filter(condition)`: a slice of `frame` (no copy) when the rows that meet the
    condition come first, as the request table orders them (paths.LEADING_ORDER), else a filter."""
    mask = frame.select(condition.fill_null(False)).to_series()
    n = int(mask.sum())
    return frame.head(n) if mask.head(n).all() else frame.filter(condition)


@dataclass
class GroupResult:
    values: dict[str, Number]
    details: dict[str, dict[str, object]] = field(default_factory=dict)
    # Features the group found it could not compute for lack of columns, with those columns
    # (for features whose inputs have alternatives, e.g. gpu_util or exec spans).
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Why features the group could not compute are undefined for this trace (shown to users).
    reasons: dict[str, str] = field(default_factory=dict)
    # Why every feature left undefined without a reason of its own is undefined (an early exit).
    reason: str | None = None

    def explain(self, why: str, names: Iterable[str] | None = None) -> "GroupResult":
        """`why` becomes the reason of each of `names` (default: the features in `values`) that is
        None and has neither a reason nor missing columns yet. Returns the result itself."""
        for name in self.values if names is None else names:
            if self.values.get(name) is None and name not in self.reasons and name not in self.missing:
                self.reasons[name] = why
        return self


GroupFn = Callable[[FeatureContext], GroupResult]


@dataclass(frozen=True)
class FeatureGroup:
    name: str
    fn: GroupFn
    outputs: Mapping[str, FeatureSpec]


FEATURES: dict[str, FeatureSpec] = {}
GROUPS: dict[str, FeatureGroup] = {}


def feature_group(name: str, outputs: list[FeatureSpec]) -> Callable[[GroupFn], GroupFn]:
    """Register a function computing the listed features (declared once, here)."""

    def register(fn: GroupFn) -> GroupFn:
        if name in GROUPS:
            raise ValueError(f"feature group {name!r} is declared twice")
        specs = {}
        for spec in outputs:
            if spec.name in FEATURES or spec.name in specs:
                raise ValueError(f"feature {spec.name!r} is declared twice")
            if spec.unit not in UNITS:
                raise ValueError(
                    f"feature {spec.name!r} of group {name!r}: unit {spec.unit!r} is not one of {', '.join(UNITS)}"
                )
            specs[spec.name] = FeatureSpec(spec.name, spec.unit, spec.description, spec.requires, name)
        FEATURES.update(specs)
        GROUPS[name] = FeatureGroup(name, fn, specs)
        return fn

    return register


def missing_columns(spec: FeatureSpec, columns: set[str]) -> tuple[str, ...]:
    return tuple(c for c in spec.requires if c not in columns)


@dataclass
class FeatureValues:
    values: dict[str, Number]
    details: dict[str, dict[str, object]]
    missing: dict[str, tuple[str, ...]]  # feature -> columns that would make it computable
    reasons: dict[str, str] = field(default_factory=dict)  # feature -> why it is undefined here

    def reading(self, name: str) -> FeatureReading:
        """The value of `name` with its unit; when undefined, the columns that would give it or
        (columns present) why it is undefined in this trace."""
        value = self.values.get(name)
        unit = FEATURES[name].unit if name in FEATURES else ""
        if value is not None:
            return FeatureReading(value, unit)
        if name in self.missing:
            return FeatureReading(None, unit, missing=tuple(self.missing[name]))
        return FeatureReading(None, unit, reason=self.reasons.get(name, UNDEFINED))


UNDEFINED = "undefined in this trace"  # the reason of an undefined feature whose group gave none


def compute(ctx: FeatureContext, names: set[str] | None = None) -> FeatureValues:
    """Compute the requested features (all when `names` is None), only their groups."""
    wanted = set(FEATURES) if names is None else set(names)
    values: dict[str, Number] = {}
    details: dict[str, dict[str, object]] = {}
    missing: dict[str, tuple[str, ...]] = {}
    reasons: dict[str, str] = {}
    for group in GROUPS.values():
        needed = wanted & set(group.outputs)
        if not needed:
            continue
        absent = {n: missing_columns(group.outputs[n], ctx.columns) for n in needed}
        if all(absent.values()):
            for n in needed:
                values[n] = None
                missing[n] = absent[n]
            continue
        result = group.fn(ctx)
        _check_declared(group, result)
        for n in needed:
            if absent[n] or n in result.missing:
                values[n] = None
                missing[n] = absent[n] or result.missing[n]
            else:
                values[n] = _clean(result.values.get(n))
                if n in result.details:
                    details[n] = result.details[n]
                if values[n] is None:  # undefined: the group says why, else it is a gap in the group
                    reasons[n] = result.reasons.get(n) or result.reason or f"not computed by {group.name}"
    return FeatureValues(values, details, missing, reasons)


def _check_declared(group: FeatureGroup, result: GroupResult) -> None:
    """A group speaks only of the features it declares; anything else is a programming error."""
    for part in ("values", "details", "missing", "reasons"):
        for name in getattr(result, part):
            if name not in group.outputs:
                raise RuntimeError(
                    f"feature group {group.name!r} returned {part} for {name!r}, which it does not declare"
                )


def _clean(value: object) -> Number:
    if value is None:
        return None
    value = float(value)  # type: ignore[arg-type]
    return value if value == value and value not in (float("inf"), float("-inf")) else None
