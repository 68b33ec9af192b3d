"""The typed visuals of a report: aggregate tables, never raw rows, with what each chart shows.

Computed by coherence_diag.visuals (from an analysis), drawn by render/charts.py; part of the
result model so that a chart renderer (e.g. a separate process) needs nothing else of the tool.

A `Visual` is either defined (a `VisualTable` of aggregates) or omitted (an `omitted_reason`
saying what the trace lacks); it is never empty. Tables are small by construction (at most
MAX_TABLE_ROWS rows: fixed time bins, top-N entities in a stated order) and every numeric
column carries its unit in its name (UNIT_SUFFIXES). Presentation (render/charts.py) reads only
these objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The mark budget: no table (and so no chart) holds more rows than this.
MAX_TABLE_ROWS = 2_000
# Episodes marked on one chart at most (the largest, then the earliest, are kept).
MAX_EPISODES = 40

# Unit suffixes of numeric columns: milliseconds, seconds, a share in [0, 1], watts, a count,
# a rate per second, a ratio of like quantities, a robust z-score, milliseconds per 1000 tokens.
UNIT_SUFFIXES = ("_ms", "_s", "_frac", "_w", "_count", "_per_s", "_ratio", "_z", "_ms_per_ktok")
# Label columns (text, no unit). A `unit` column states the unit of the `_value` columns of its row.
LABEL_COLUMNS = frozenset(
    {"device", "pool", "accelerator", "phase", "series", "stage", "component", "kind", "group", "measure", "unit", "change"}
)

VisualKind = Literal["heatmap", "timeline", "wave", "sync_map", "capacity", "stragglers", "energy", "ecdf", "before_after"]
EpisodeKind = Literal["burst", "backlog", "retry_storm", "wave", "stall"]


def column_has_unit(name: str, columns: tuple[str, ...]) -> bool:
    """A column is well named when it is a label, ends with a unit suffix, or is a `_value`
    column of a table whose `unit` column states the unit per row."""
    if name in LABEL_COLUMNS or name.endswith(UNIT_SUFFIXES):
        return True
    return name.endswith("_value") and "unit" in columns


@dataclass(frozen=True)
class VisualTable:
    """Aggregates behind one chart: named columns (units in the names) and rows of plain values
    (str, int, float, bool or None), in a deterministic order."""

    columns: tuple[str, ...]
    rows: tuple[tuple[object, ...], ...]

    def __post_init__(self) -> None:
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"duplicate column names in {self.columns}")
        for name in self.columns:
            if not column_has_unit(name, self.columns):
                raise ValueError(f"column {name!r} has no unit suffix ({', '.join(UNIT_SUFFIXES)}) and is not a label")
        if len(self.rows) > MAX_TABLE_ROWS:
            raise ValueError(f"{len(self.rows)} rows exceed the mark budget of {MAX_TABLE_ROWS}")
        width = len(self.columns)
        if any(len(row) != width for row in self.rows):
            raise ValueError(f"every row must have {width} values ({', '.join(self.columns)})")

    def column(self, name: str) -> tuple[object, ...]:
        k = self.columns.index(name)
        return tuple(row[k] for row in self.rows)

    def numbers(self, name: str) -> tuple[float, ...]:
        """The defined (not None) values of a numeric column, as floats."""
        return tuple(float(v) for v in self.column(name) if isinstance(v, (int, float)))

    def records(self) -> list[dict[str, object]]:
        """One dict per row (what a chart spec embeds as its inline data)."""
        return [dict(zip(self.columns, row)) for row in self.rows]


@dataclass(frozen=True)
class Episode:
    """A time interval a feature or index singled out: a burst and its backlog, a retry storm,
    a wave excursion or a service stall. Times in seconds since the visual's time origin."""

    kind: EpisodeKind
    start_s: float
    end_s: float
    label: str  # what it is, with its size (may quote trace-derived names: escape when shown)
    rule: str | None = None  # the finding it supports, when that rule fired on this trace


@dataclass(frozen=True)
class Visual:
    """One chart of the report: its table of aggregates, or why the trace cannot support it."""

    id: str  # stable, anchor-safe: [a-z0-9-]
    title: str
    caption: str  # what to look at
    kind: VisualKind
    table: VisualTable | None
    omitted_reason: str | None
    supports_rules: tuple[str, ...]  # rules whose findings this chart shows the evidence of
    episodes: tuple[Episode, ...] = ()
    time_origin_utc: str | None = None  # the instant t = 0 of the `_s` time columns (ISO-8601 UTC)

    def __post_init__(self) -> None:
        if (self.table is None) == (self.omitted_reason is None):
            raise ValueError(f"visual {self.id!r}: exactly one of table and omitted_reason must be given")
        if not self.id or any(not (c.islower() or c.isdigit() or c == "-") for c in self.id):
            raise ValueError(f"visual id {self.id!r} must be lowercase letters, digits and '-'")
        if self.table is not None and not self.table.rows:
            raise ValueError(f"visual {self.id!r}: an empty table is omitted with a reason, never drawn")
        if len(self.episodes) > MAX_EPISODES:
            raise ValueError(f"visual {self.id!r}: {len(self.episodes)} episodes exceed {MAX_EPISODES}")

    @property
    def defined(self) -> bool:
        return self.table is not None
