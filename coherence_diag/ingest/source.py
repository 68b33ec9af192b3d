"""The one way in: a `TraceSource` is anything that yields trace rows in canonical types.

Validation (validate.py) reads a trace only through this protocol, whatever it came from: files
in the trace format (files.py), or an adapter mapping another format to the schema (one module
per source in this package, registered in registry.py), or several of those merged (merge.py).

A source gives:

- `display_path`: how messages name it;
- `columns`: the schema columns present (a column absent here is absent from the trace);
- `scan()`: one LazyFrame, every schema column it has cast to its declared type (`ts` Int64 ns
  since the epoch, UTC), plus two provenance columns, `ORIGIN` (an index into `origins`) and
  `RECORD` (the 0-based record of that origin the row comes from: a data row of a file, a line
  of a JSONL file, a sample of a metrics file): what the audit table names for a row set aside;
- `unmapped()`: input records the source could not map to any row, in the audit table's own
  shape (AUDIT_SCHEMA, reason codes REASONS below), so that they are counted and shown with the
  rows validation sets aside;
- `provenance`: where each column came from (model/provenance.py), or None for a trace in the
  trace format itself;
- `read_error(exc)`: the user-facing error for a decode failure surfaced while collecting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import polars as pl

from coherence_diag import schema
from coherence_diag.errors import TraceError
from coherence_diag.model import Provenance

ORIGIN = "_origin"  # Int32: index into the source's `origins`
RECORD = "_record"  # UInt32: 0-based record of that origin

# The audit table: one row per (file, layer, reason, column) with the number of rows and a few
# example records (0-based). Validation fills it with the rows it sets aside; adapters with the
# input records they cannot map.
AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "layer": pl.String(),
    "reason": pl.String(),
    "column": pl.String(),
    "rows": pl.UInt32(),
    "example_rows": pl.List(pl.UInt32()),
    "warning": pl.Boolean(),
}
EXAMPLES = 3

# Reason codes of adapters (validation's own are in validate.py). `column` names the input field.
REASONS: dict[str, str] = {
    "unmapped_record": "input record that maps to no trace row (a record type or key the source does not define)",
    "unparsed_field": "input field that does not parse in the source's documented format or unit",
}
WARNING_REASONS: frozenset[str] = frozenset()


def empty_audit() -> pl.DataFrame:
    return pl.DataFrame(schema=AUDIT_SCHEMA)


@runtime_checkable
class TraceSource(Protocol):
    """What validation needs of a trace, whatever its input format."""

    @property
    def display_path(self) -> str: ...

    @property
    def columns(self) -> set[str]: ...

    @property
    def single_text(self) -> dict[str, str]:
        """Known text columns with one value on every row, when cheaply known (else {})."""
        ...

    @property
    def origins(self) -> Sequence[str]: ...

    @property
    def provenance(self) -> Provenance | None: ...

    def scan(self) -> pl.LazyFrame: ...

    def unmapped(self) -> pl.DataFrame: ...

    def read_error(self, exc: BaseException) -> TraceError: ...


@dataclass
class FrameSource:
    """A source already mapped to the schema in memory (what every adapter returns).

    `frame` holds schema columns in canonical types, extra columns kept as they are, and
    ORIGIN / RECORD."""

    display_path: str
    frame: pl.DataFrame
    origins: tuple[str, ...]
    unmapped_audit: pl.DataFrame = field(default_factory=empty_audit)
    provenance: Provenance | None = None

    def __post_init__(self) -> None:
        missing = [c for c in (*schema.CORE_COLUMNS, ORIGIN, RECORD) if c not in self.frame.columns]
        if missing:  # a programming error of an adapter, not bad input
            raise ValueError(f"{self.display_path}: mapped frame lacks {missing}")

    @property
    def columns(self) -> set[str]:
        return {c for c in self.frame.columns if c in schema.COLUMNS and self.frame[c].null_count() < self.frame.height}

    @property
    def single_text(self) -> dict[str, str]:
        return {}

    def scan(self) -> pl.LazyFrame:
        present = self.columns
        keep = [c for c in self.frame.columns if c not in schema.COLUMNS or c in present]
        return self.frame.lazy().select(keep)

    def unmapped(self) -> pl.DataFrame:
        return self.unmapped_audit

    def read_error(self, exc: BaseException) -> TraceError:
        text = str(exc).strip().splitlines()
        return TraceError(f"{self.display_path}: could not be read ({text[0] if text else type(exc).__name__})", path=self.display_path)


def audit_rows(
    records: pl.DataFrame, *, file: str, layer: str, reason: str, column: str, warning: bool = False
) -> pl.DataFrame:
    """Audit rows for `records` (a frame with a RECORD column), all with one reason."""
    if records.is_empty():
        return empty_audit()
    numbers = records[RECORD].cast(pl.UInt32).sort()
    return pl.DataFrame(
        {
            "file": [file],
            "layer": [layer],
            "reason": [reason],
            "column": [column],
            "rows": [records.height],
            "example_rows": [numbers.head(EXAMPLES).to_list()],
            "warning": [warning],
        },
        schema=AUDIT_SCHEMA,
    )
