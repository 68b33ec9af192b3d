"""Replay a real arrival process: Azure LLM inference CSV or Mooncake JSONL, or the arrivals of
any request source already read (`ArrivalTable`: the CLI reads every `convert` source with its
adapter, coherence_diag.convert.read_arrivals; the simulator never imports the ingest package).

Only arrival times and token counts are taken from the file; everything else (priorities,
SLOs, the fleet) comes from the scenario. Arrivals without token counts take the scenario's own
token mix (the replay says so in its provenance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from coherence_diag.errors import InputError

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
MOONCAKE_COLUMNS = ("timestamp", "input_length", "output_length")
EXPECTED = (
    "expected an Azure LLM inference CSV with columns TIMESTAMP,ContextTokens,GeneratedTokens "
    "or a Mooncake JSONL with fields timestamp (ms),input_length,output_length"
)
MAX_CONTEXT_TOKENS = 131_072  # the simulated model's context window
MAX_OUTPUT_TOKENS = 8_192


@dataclass
class ReplayedArrivals:
    arrival_s: np.ndarray  # from 0, sorted
    prompt: np.ndarray | None  # None: the source has no token counts (the scenario's mix is drawn)
    output: np.ndarray | None
    duration_s: float


@dataclass(frozen=True)
class ArrivalTable:
    """Arrivals already read from a source: ns since any origin, token counts or None."""

    arrival_ns: np.ndarray
    prompt: np.ndarray | None
    output: np.ndarray | None
    label: str  # the source and path, for messages


def load_arrivals(path: Path | ArrivalTable, *, speedup: float = 1.0, duration_s: float | None = None) -> ReplayedArrivals:
    if isinstance(path, ArrivalTable):
        return _replay(path.label, path.arrival_ns.astype(np.float64) / 1e9, path.prompt, path.output, speedup, duration_s)
    path = Path(path)
    df = _read_table(path)
    cols = set(df.columns)
    if set(AZURE_COLUMNS) <= cols:
        t_s, prompt, output = _azure(df, path)
    elif set(MOONCAKE_COLUMNS) <= cols:
        t_s, prompt, output = _mooncake(df, path)
    else:
        found = ",".join(df.columns[:8]) or "(none)"
        raise InputError(f"arrivals file {path}: unrecognized columns {found}; {EXPECTED}", path=str(path))
    return _replay(str(path), t_s, prompt, output, speedup, duration_s)


def _replay(
    label: str, t_s: np.ndarray, prompt: np.ndarray | None, output: np.ndarray | None, speedup: float, duration_s: float | None
) -> ReplayedArrivals:
    path = label

    if len(t_s) == 0:
        raise InputError(f"arrivals file {path}: no rows; {EXPECTED}", path=str(path))
    for name, values in (("ContextTokens/input_length", prompt), ("GeneratedTokens/output_length", output)):
        if values is not None and (values < 0).any():
            raise InputError(f"arrivals file {path}: negative token counts in {name}; expected counts >= 0", path=str(path))
    if not np.isfinite(t_s).all():
        raise InputError(f"arrivals file {path}: non-finite timestamps; {EXPECTED}", path=str(path))

    order = np.argsort(t_s, kind="stable")
    t_s = (t_s[order] - t_s[order][0]) / speedup
    if prompt is not None:
        prompt = np.clip(prompt[order], 1, MAX_CONTEXT_TOKENS).astype(np.int64)
    if output is not None:
        output = np.clip(output[order], 1, MAX_OUTPUT_TOKENS).astype(np.int64)
    if duration_s is not None:
        keep = t_s < duration_s
        t_s = t_s[keep]
        prompt = None if prompt is None else prompt[keep]
        output = None if output is None else output[keep]
        if len(t_s) == 0:
            raise InputError(
                f"arrivals file {path}: no arrivals in the first {duration_s} s; expected duration_s > 0", path=str(path)
            )
    duration = float(duration_s) if duration_s is not None else float(t_s[-1]) + 1.0
    return ReplayedArrivals(t_s, prompt, output, duration)


def _read_table(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise InputError(f"arrivals file {path}: not found or not a regular file; {EXPECTED}", path=str(path))
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson", ".json") or (suffix != ".csv" and _looks_like_json(path)):
            return pl.read_ndjson(path)
        return pl.read_csv(path, infer_schema_length=10_000)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"arrivals file {path}: cannot be parsed ({exc}); {EXPECTED}", path=str(path)) from exc


def _looks_like_json(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(64).lstrip().startswith(b"{")


def _ints(df: pl.DataFrame, col: str, path: Path) -> np.ndarray:
    try:
        s = df.get_column(col).cast(pl.Float64, strict=True)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"arrivals file {path}: column {col} is not numeric; expected integer token counts", path=str(path)) from exc
    if s.null_count():
        raise InputError(f"arrivals file {path}: column {col} has {s.null_count()} empty values; expected integer token counts", path=str(path))
    return np.rint(s.to_numpy()).astype(np.int64)


def _azure(df: pl.DataFrame, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ts = df.get_column("TIMESTAMP")
    try:
        if ts.dtype == pl.String:
            ts = ts.str.strip_chars().str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=True, time_unit="ns")
        ns = ts.cast(pl.Datetime("ns")).dt.epoch("ns").to_numpy()
    except pl.exceptions.PolarsError as exc:
        raise InputError(
            f"arrivals file {path}: TIMESTAMP values are not 'YYYY-MM-DD HH:MM:SS[.fffffff]' ({exc}); {EXPECTED}",
            path=str(path),
        ) from exc
    if ts.null_count():
        raise InputError(f"arrivals file {path}: TIMESTAMP has empty values; {EXPECTED}", path=str(path))
    return ns.astype(np.float64) / 1e9, _ints(df, "ContextTokens", path), _ints(df, "GeneratedTokens", path)


def _mooncake(df: pl.DataFrame, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ms = _ints(df, "timestamp", path)
    return ms.astype(np.float64) / 1e3, _ints(df, "input_length", path), _ints(df, "output_length", path)
