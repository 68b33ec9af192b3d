"""The validated layers as the analysis reads them after the request paths (projection.py): in
memory (one pass; split by event, EventParts), or spilled to disk by work units (scale/reduce.py)
when a trace is larger than memory (docs/scale.md, "Layers on disk", "Layers split by event").

Readers ask for the columns they use and, optionally, the events whose rows they use
(`Layers.read`): from memory that is a selection of those events' parts (no copy for one event);
from disk it reads only those columns, one file per column, already in the trace's row order.
Either way the reader gets the same rows, in the same order, with the same values, so reports do
not depend on where the layers were kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from coherence_diag.errors import InputError
from coherence_diag.validate import constant_value, constants_as_scalars


@dataclass
class SpilledLayer:
    """One layer on disk: each column in its own Parquet file, rows in the trace's order; a column
    holding one value (or only nulls) on every row is kept as that value, not as a file."""

    height: int
    schema: dict[str, pl.DataType]
    files: dict[str, Path]  # column -> file
    constants: dict[str, Any] = field(default_factory=dict)  # column -> its one value (None: all null)

    def column(self, name: str, mask: pl.Series | None = None) -> pl.Series:
        n = self.height if mask is None else int(mask.sum())
        if name in self.constants:
            return pl.repeat(self.constants[name], n, dtype=self.schema[name], eager=True).alias(name)
        series = pl.read_parquet(self.files[name]).to_series()
        return series if mask is None else series.filter(mask)

    def read(self, columns: Sequence[str], events: Sequence[str] | None) -> pl.DataFrame:
        mask = None
        if events is not None and "event" in self.schema:
            # Compared as stored (Categorical): a cast to text would cost 16 bytes per row (0.75
            # GB for the gpu layer at 100M trace rows) for a comparison of codes.
            mask = self.column("event").is_in(list(events)).fill_null(False)
            if bool(mask.all()):
                mask = None
        return pl.DataFrame([self.column(c, mask) for c in columns]) if columns else pl.DataFrame()

    @classmethod
    def write(cls, directory: Path, frame_columns: Iterable[pl.Series], height: int, schema: dict[str, pl.DataType]) -> SpilledLayer:
        """Spill columns (each already in the trace's row order) into `directory`, one at a time:
        the caller may build each column only when asked for it (reduce.py gathers them)."""
        layer = cls(height=height, schema=dict(schema), files={})
        with spill_errors(directory):
            directory.mkdir(parents=True, exist_ok=True)
            for series in frame_columns:
                is_constant, value = constant_value(series)
                if is_constant:
                    layer.constants[series.name] = value
                    continue
                path = directory / f"{len(layer.files):03d}.parquet"
                # lz4: fast to write and read back; statistics are of no use (files are read whole).
                series.to_frame().write_parquet(path, compression="lz4", statistics=False)
                layer.files[series.name] = path
        return layer


# The row number of each row in its layer, kept by EventParts to put the parts' rows back in order.
_ROW = "__row_in_layer"


@dataclass
class EventParts:
    """One layer in memory, split by event: each event's rows (in their order) with only the
    columns they fill. A trace's layers mix events that fill different columns (gpu `exec` rows
    have no utilization, `sample` rows no request key or duration, `device_info` rows are the only
    ones with host, pool and accelerator), so a single frame holds a value slot for every column
    on every row, most of them null: at 10M trace rows 395 MiB for the projected gpu layer, 212
    MiB as parts. A column a part does not fill (or fills with one value) is kept as that value
    (validate.constants_as_scalars), and readers of one event (most: `events=("exec",)`) get
    its part's columns without a filter or a copy."""

    height: int
    schema: dict[str, pl.DataType]
    parts: dict[object, pl.DataFrame]  # event value -> its rows, with _ROW when there are several parts

    @classmethod
    def split(cls, frame: pl.DataFrame) -> pl.DataFrame | EventParts:
        """The layer as parts, or the frame itself when it has one event (or no `event`)."""
        events = frame["event"].unique(maintain_order=True).to_list() if "event" in frame.columns else []
        if len(events) < 2:
            return frame
        # Which columns each event's rows fill, so that a part copies only those: counted with
        # masks (a group-by would gather every column by event: +400 MiB for the 10M-row gpu layer).
        others = [c for c in frame.columns if c != "event"]
        is_event = [pl.col("event").eq_missing(pl.lit(e, frame.schema["event"])) for e in events]
        sums = [(pl.col(c).is_not_null() & mask).sum().alias(f"{i}:{c}") for i, mask in enumerate(is_event) for c in others]
        counts = frame.select(sums).row(0, named=True) if sums else {}
        numbered = frame.lazy().with_row_index(_ROW)
        parts = {}
        for i, (event, mask) in enumerate(zip(events, is_event, strict=True)):
            filled = [c for c in others if counts[f"{i}:{c}"]]
            part = numbered.filter(mask).select(_ROW, "event", *filled).collect()
            unfilled = [pl.lit(None, frame.schema[c]).alias(c) for c in others if c not in filled]
            parts[event] = constants_as_scalars(part.with_columns(unfilled)).select(_ROW, *frame.columns)
        return cls(frame.height, dict(frame.schema), parts)

    def read(self, columns: Sequence[str], events: Sequence[str] | None, *, ordered: bool = True) -> pl.DataFrame:
        """The rows of `events` (every row when None) with `columns`, in the layer's order; when
        not `ordered`, each event's rows in their order but one event after the other (no sort)."""
        chosen = [part for event, part in self.parts.items() if events is None or event in events]
        if not columns:
            return pl.DataFrame()  # as a frame's select of no columns
        if not chosen:
            return pl.DataFrame(schema={c: self.schema[c] for c in columns})
        if len(chosen) == 1:
            return chosen[0].select(columns)
        if not ordered:
            return pl.concat([part.select(columns) for part in chosen])
        # Rows of several events: concatenated, then put back in the layer's order.
        return pl.concat([part.select(_ROW, *columns) for part in chosen]).sort(_ROW).drop(_ROW)


class Layers(Mapping[str, pl.DataFrame]):
    """A trace's projected layers by name. `layers[name]` is the whole layer (every column);
    readers that may meet a layer on disk ask for what they use with `read`."""

    def __init__(
        self,
        frames: Mapping[str, pl.DataFrame | SpilledLayer | EventParts] | None = None,
        *,
        spill_dir: SpillDirectory | None = None,
    ) -> None:
        self._frames: dict[str, pl.DataFrame | SpilledLayer | EventParts] = dict(frames or {})
        # The directory of the spilled layers: removed once no Layers refers to it (or at exit).
        self._spill_dir = spill_dir

    @classmethod
    def of(cls, layers: Mapping[str, pl.DataFrame] | Layers) -> Layers:
        return layers if isinstance(layers, Layers) else cls(dict(layers))

    @classmethod
    def in_parts(cls, frames: Mapping[str, pl.DataFrame]) -> Layers:
        """Layers in memory, each split by event (EventParts)."""
        return cls({name: EventParts.split(frame) for name, frame in frames.items()})

    def __getitem__(self, name: str) -> pl.DataFrame:
        frame = self._frames[name]
        return frame if isinstance(frame, pl.DataFrame) else frame.read(list(frame.schema), None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def spill_path(self) -> Path | None:
        """The directory of the spilled layers (None in memory)."""
        return None if self._spill_dir is None else self._spill_dir.path

    @property
    def spilled(self) -> bool:
        return any(isinstance(f, SpilledLayer) for f in self._frames.values())

    def height(self, name: str) -> int:
        frame = self._frames.get(name)
        return 0 if frame is None else frame.height

    def schema(self, name: str) -> dict[str, pl.DataType]:
        frame = self._frames.get(name)
        return {} if frame is None else dict(frame.schema)

    def has_rows(self, name: str) -> bool:
        return self.height(name) > 0

    def read(
        self, name: str, columns: Iterable[str] | None = None, *, events: Iterable[str] | None = None, ordered: bool = True
    ) -> pl.DataFrame | None:
        """The layer's rows (of `events`, when given, in their order) with those of `columns` it
        has (all when None), in the layer's column order; None when the trace has no such layer.
        `ordered=False`: each event's rows still in their order, but the rows of different events
        possibly not interleaved as in the layer (no sort of EventParts' parts), for readers
        that only aggregate or that treat each event's rows apart."""
        frame = self._frames.get(name)
        if frame is None:
            return None
        wanted = None if columns is None else set(columns)
        selected = [c for c in frame.schema if wanted is None or c in wanted]
        wanted_events = None if events is None else list(events)
        if isinstance(frame, EventParts):
            return frame.read(selected, wanted_events, ordered=ordered)
        if isinstance(frame, SpilledLayer):
            return frame.read(selected, wanted_events)
        if wanted_events is None or "event" not in frame.columns:
            return frame.select(selected)
        return frame.filter(pl.col("event").is_in(wanted_events)).select(selected)

    def replace(self, name: str, frame: pl.DataFrame) -> Layers:
        """A copy with layer `name` replaced by `frame` (in memory); the spilled files are shared."""
        frames = dict(self._frames)
        frames[name] = frame
        return Layers(frames, spill_dir=self._spill_dir)


SPILL_PREFIX = "coherence-diag-layers-"
OWNER_FILE = "owner"  # in each spill directory: "<pid> <process start time>" of the process it serves


class SpillDirectory:
    """A fresh directory for spilled tables under the system's temporary directory (TMPDIR to
    move it), removed with its files when this object is garbage-collected or the process exits
    (weakref.finalize runs at exit too): every Layers spilled into it holds it. A process killed
    outright cannot remove its directory (up to GBs): the next one removes it
    (`remove_abandoned`), knowing it by the dead owner its `owner` file names."""

    def __init__(self) -> None:
        root = Path(tempfile.gettempdir())
        remove_abandoned(root)
        with spill_errors(root):
            self.path = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX))
            (self.path / OWNER_FILE).write_text(_owner(os.getpid()))
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)

    def remove(self) -> None:
        self._remove()


def remove_abandoned(root: Path) -> list[Path]:
    """Remove the spill directories under `root` whose owner process no longer runs (killed
    before it could remove them); the removed paths. A directory without an owner file (being
    made, or another version's) or that cannot be read or removed (another user's) is left."""
    removed = []
    for directory in sorted(root.glob(SPILL_PREFIX + "*")):
        try:
            owner = (directory / OWNER_FILE).read_text()
        except OSError:
            continue
        pid_text = owner.partition(" ")[0]
        if not pid_text.isdigit() or _owner(int(pid_text)) == owner:
            continue  # unreadable, or its process still runs
        shutil.rmtree(directory, ignore_errors=True)
        if not directory.exists():
            removed.append(directory)
    return removed


def _owner(pid: int) -> str:
    """"<pid> <start time>" of a running process; "" when it does not run. The start time (Linux:
    /proc/PID/stat, field 22) tells a pid reused by a new process from the directory's owner."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    except PermissionError:
        pass  # runs, as another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        started = stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "?"  # no /proc: the pid alone
    return f"{pid} {started}"


@contextmanager
def spill_errors(directory: Path) -> Iterator[None]:
    """A failure to write spilled tables (a full disk, a read-only temporary directory) as an
    InputError naming the directory and the way out, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise _cannot_write(directory, exc.strerror or str(exc)) from None
    except pl.exceptions.PolarsError as exc:
        if "os error" not in str(exc).lower():  # Polars reports a failed write as its own error
            raise
        raise _cannot_write(directory, str(exc)) from None


def _cannot_write(directory: Path, why: str) -> InputError:
    return InputError(
        f"{directory}: cannot write the work units' temporary files ({why}); "
        "set TMPDIR to a directory with free space of a few times the trace's Parquet files"
    )
