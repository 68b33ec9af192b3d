"""Reading Prometheus metrics into one long frame, for the `prometheus` and `dcgm` sources.

Two inputs:

- text exposition (what `/metrics` serves), parsed with `prometheus_client`'s parser. Its time
  comes from, in this order: timestamps on the samples (milliseconds since the epoch, the format's
  own); else `# ts=<unix seconds or RFC 3339>` lines, each starting a snapshot (several scrapes
  appended to one file); else `--start` for a file holding one snapshot. Without any of the three
  the file is refused: a sample without a time cannot be placed.
- the Prometheus HTTP API's `query_range` (matrix) or `query` (vector) JSON response: float-second
  timestamps, values as strings (`"NaN"`, `"+Inf"` included).

Either becomes one frame: `METRIC` (the sample name), `TS` (ns), `VALUE` (Float64), RECORD (the
n-th sample of the file, 0-based), and one String column per label named `@<label>`.

Then, for metrics that have no row form: `counter_increase` (deltas over a sorted series, a drop
read as a restart) and `summaries` (per-window histogram and counter summaries for the provenance).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from coherence_diag.errors import TraceError
from coherence_diag.ingest.common import record_error
from coherence_diag.ingest.source import RECORD
from coherence_diag.model import MetricSummary

METRIC, TS, VALUE = "__metric", "__ts", "__value"
LABEL = "@"  # prefix of label columns: labels never collide with trace columns (`device` is a DCGM label)
SERIES = "__series"
WINDOW_S = 300  # summary windows: 5 minutes, the usual rate() window of dashboards
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
MS_LIMIT = 1e11  # a time above 10^11 is milliseconds (year 5138 in seconds); below, seconds (1973 in ms)
TIME_WAYS = "timestamps on the samples, `# ts=<unix seconds or RFC 3339>` lines before each snapshot, or --start TIME for one snapshot"
_TS_LINE = re.compile(r"^#\s*ts=(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Samples:
    frame: pl.DataFrame
    records: int
    clock: str  # where the times came from, for the provenance


def label(name: str) -> str:
    return LABEL + name


def read_samples(path: Path, source: str, snapshot_ns: int | None) -> Samples:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: not a readable {source} file ({exc}); expected Prometheus text or query_range JSON", path=str(path)) from None
    if text.lstrip().startswith("{"):
        return _read_json(path, text)
    return _read_text(path, text, source, snapshot_ns)


# --- text exposition ------------------------------------------------------------------------------


def _read_text(path: Path, text: str, source: str, snapshot_ns: int | None) -> Samples:
    # Imported here: the parser takes ~0.1-0.2 s to import, which every command that loads the
    # source registry (analyze, convert of any source) would otherwise pay.
    from prometheus_client.parser import text_string_to_metric_families

    parts = _TS_LINE.split(text)  # [before, ts1, block1, ts2, block2, ...]
    blocks: list[tuple[str | None, str]] = [(None, parts[0])] + [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts), 2)]
    names: list[str] = []
    values: list[float] = []
    stamps: list[float | None] = []
    snapshot: list[int] = []
    labels: list[dict[str, str]] = []
    for index, (_, block) in enumerate(blocks):
        try:
            # One loop over the parser's samples: the text format has no columnar reader.
            for family in text_string_to_metric_families(block):
                for sample in family.samples:
                    names.append(sample.name)
                    values.append(float(sample.value))
                    stamps.append(sample.timestamp if sample.timestamp is None else float(sample.timestamp))
                    snapshot.append(index)
                    labels.append(sample.labels)
        except (ValueError, TypeError, IndexError) as exc:
            raise _text_error(path, text, exc, source) from None
    if not names:
        expected = "Prometheus text exposition or query_range JSON"
        raise TraceError(f"{path}: not a {source} file: no metric samples found; expected {expected}", path=str(path))
    frame = pl.DataFrame(
        {METRIC: names, VALUE: values, "__stamp": stamps, "__snapshot": snapshot},
        schema={METRIC: pl.String, VALUE: pl.Float64, "__stamp": pl.Float64, "__snapshot": pl.Int64},
    ).with_row_index(RECORD)
    frame = pl.concat([frame, _label_frame(labels)], how="horizontal")
    frame, clock = _text_times(path, frame, blocks, snapshot_ns)
    return Samples(frame.drop("__stamp", "__snapshot"), frame.height, clock)


def _text_times(path: Path, frame: pl.DataFrame, blocks: list[tuple[str | None, str]], snapshot_ns: int | None) -> tuple[pl.DataFrame, str]:
    stamped = frame["__stamp"].is_not_null()
    separated = len(blocks) > 1
    if stamped.any():
        if not stamped.all():
            bad = int(frame.filter(~stamped)[RECORD][0])
            problem = "sample has no timestamp while others have one (mixed time sources)"
            raise record_error(path, bad, problem, "a timestamp on every sample or on none")
        if separated:
            raise TraceError(f"{path}: both sample timestamps and `# ts=` lines; expected one time source", path=str(path))
        ms = (pl.col("__stamp") * 1000.0).round(0)
        _refuse_mixed_units(path, frame, ms, "sample timestamp", "milliseconds since the epoch")  # ms as written
        return frame.with_columns((ms.cast(pl.Int64) * 1_000_000).alias(TS)), "timestamps on the samples (ms)"
    if separated:
        first = frame.filter(pl.col("__snapshot") == 0)
        if not first.is_empty():
            raise record_error(path, int(first[RECORD][0]), "sample before the first `# ts=` line has no time", "a `# ts=` line before each snapshot")
        times = [_separator_ns(path, text) for text, _ in blocks[1:] if text is not None]
        by_block = pl.DataFrame({"__snapshot": list(range(1, len(blocks))), TS: times}, schema={"__snapshot": pl.Int64, TS: pl.Int64})
        return frame.join(by_block, on="__snapshot", how="left").sort(RECORD), "`# ts=` lines before each snapshot"
    if snapshot_ns is None:
        raise TraceError(f"{path}: the snapshot carries no time; expected {TIME_WAYS}", path=str(path))
    return frame.with_columns(pl.lit(snapshot_ns, pl.Int64).alias(TS)), "one snapshot, at --start"


def _separator_ns(path: Path, text: str) -> int:
    """`# ts=` value: unix seconds (a number) or RFC 3339."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            expected = "unix seconds or RFC 3339 (2024-05-01T12:00:00Z)"
            raise TraceError(f"{path}: `# ts={text}` is not a time; expected {expected}", path=str(path)) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000
    if not math.isfinite(seconds) or seconds >= MS_LIMIT:
        raise TraceError(f"{path}: `# ts={text}` is not unix seconds (milliseconds?); expected unix seconds or RFC 3339", path=str(path))
    return round(seconds * 1e6) * 1000


def _text_error(path: Path, text: str, exc: BaseException, source: str) -> TraceError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    line = next((n for n, ln in enumerate(text.splitlines(), 1) if ln.strip() and ln.strip() in detail), None)
    where = f"line {line}: " if line else ""
    return TraceError(
        f"{path}: {where}not Prometheus text exposition ({detail}); expected `name{{label=\"value\"}} value [ms]` lines ({source})",
        path=str(path),
    )


def _label_frame(labels: list[dict[str, str]]) -> pl.DataFrame:
    names = sorted({k for d in labels for k in d if not k.startswith("__")})
    return pl.DataFrame({label(n): [d.get(n) for d in labels] for n in names}, schema={label(n): pl.String for n in names})


# --- query_range / query JSON ----------------------------------------------------------------------


def _read_json(path: Path, text: str) -> Samples:
    expected = 'a Prometheus API response {"status": "success", "data": {"resultType": "matrix", "result": [...]}}'
    try:
        doc = json.loads(text, parse_float=str, parse_int=str)  # keep numbers as written: no float rounding before Polars
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); expected {expected}", path=str(path)) from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or doc.get("status") != "success" or data.get("resultType") not in ("matrix", "vector"):
        found = sorted(doc)[:8] if isinstance(doc, dict) else [type(doc).__name__]
        raise TraceError(f"{path}: not a Prometheus query_range response: expected {expected} (found: {', '.join(found)})", path=str(path))
    result = data.get("result")
    if not isinstance(result, list) or not all(isinstance(s, dict) and isinstance(s.get("metric"), dict) for s in result):
        raise TraceError(f"{path}: data.result is not a list of {{metric, values}} series; expected {expected}", path=str(path))
    matrix = data["resultType"] == "matrix"
    points = [s.get("values") if matrix else [s.get("value")] for s in result]
    try:
        series = pl.DataFrame(
            {SERIES: list(range(len(result))), METRIC: [s["metric"].get("__name__") for s in result], "__points": points},
            schema={SERIES: pl.Int64, METRIC: pl.String, "__points": pl.List(pl.List(pl.String))},
        )
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        bad = next((i for i, p in enumerate(points) if not _pairs(p)), 0)
        raise TraceError(f"{path}: series {bad + 1}: values are not [time, \"value\"] pairs; expected {expected}", path=str(path)) from None
    labels = _label_frame([{k: str(v) for k, v in s["metric"].items()} for s in result]).with_columns(
        pl.Series(SERIES, list(range(len(result))), pl.Int64)
    )
    frame = (
        series.explode("__points").drop_nulls("__points")
        .with_row_index(RECORD)
        .with_columns(pl.col("__points").list.get(0, null_on_oob=True).alias("__t"), pl.col("__points").list.get(1, null_on_oob=True).alias("__v"))
        .join(labels, on=SERIES, how="left").sort(RECORD)
    )
    if frame.is_empty():
        raise TraceError(f"{path}: the response holds no samples; expected {expected}", path=str(path))
    seconds = pl.col("__t").cast(pl.Float64, strict=False)
    broken = frame.filter(seconds.is_null() | ~seconds.is_finite() | pl.col("__v").is_null() | pl.col(METRIC).is_null())
    if not broken.is_empty():
        row = broken.row(0, named=True)
        what = "series without __name__" if row[METRIC] is None else f"point {row['__t']!r}, {row['__v']!r} of {row[METRIC]}"
        raise record_error(path, int(row[RECORD]), what, "[float seconds, \"value\"] points of named series")
    ms = (seconds * 1000.0).round(0)
    _refuse_mixed_units(path, frame, seconds, "timestamp", "float seconds since the epoch", seconds_expected=True)
    frame = frame.with_columns(
        (ms.cast(pl.Int64) * 1_000_000).alias(TS),
        _float_text("__v").alias(VALUE),
    )
    return Samples(frame.drop("__points", "__t", "__v", SERIES), frame.height, "query_range timestamps (float seconds)")


def _pairs(points: object) -> bool:
    return isinstance(points, list) and all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in points)


def _float_text(column: str) -> pl.Expr:
    """A Prometheus value as written: a number, `NaN`, `+Inf`, `-Inf`."""
    text = pl.col(column).str.strip_chars()
    return text.replace({"+Inf": "inf", "-Inf": "-inf", "Inf": "inf"}).cast(pl.Float64, strict=False)


def _refuse_mixed_units(path: Path, frame: pl.DataFrame, raw: pl.Expr, what: str, expected: str, *, seconds_expected: bool = False) -> None:
    """Times as written (`raw`: milliseconds in text, seconds in JSON) are either all above
    MS_LIMIT (milliseconds-sized) or all below (seconds-sized), never both; a JSON response in
    milliseconds is refused too."""
    big = frame.select(RECORD, (raw >= MS_LIMIT).alias("big"))
    n_big = int(big["big"].sum())
    if 0 < n_big < big.height:
        fewer_big = n_big * 2 < big.height
        minority = big.filter(pl.col("big") == fewer_big)
        unit = "milliseconds-sized" if fewer_big else "seconds-sized"
        raise record_error(path, int(minority[RECORD][0]), f"{what} is {unit} while others are not (mixed units)", expected)
    if seconds_expected and n_big:
        raise record_error(path, int(big[RECORD][0]), f"{what} is above 10^11 (milliseconds?)", expected)


# --- counters and histograms ---------------------------------------------------------------------


def series_key(columns: list[str], *, without: tuple[str, ...] = ()) -> pl.Expr:
    """The series' labels as `name=value` joined by commas (label order fixed: sorted names)."""
    named = [c for c in sorted(columns) if c[len(LABEL):] not in without]
    parts = [pl.when(pl.col(c).is_not_null()).then(pl.lit(c[len(LABEL):] + "=") + pl.col(c)) for c in named]
    return pl.concat_str(parts, separator=",", ignore_nulls=True) if parts else pl.lit("")


def counter_increase(value: str, over: list[str], order: str) -> pl.Expr:
    """Increase since the previous sample of the series: the difference, or the value itself
    after a drop (the process restarted and counts from 0 again); null on the first sample."""
    previous = pl.col(value).shift(1).over(over, order_by=order)
    delta = pl.col(value) - previous
    return pl.when(previous.is_null()).then(None).when(delta < 0).then(pl.col(value)).otherwise(delta)


def summaries(frame: pl.DataFrame, kinds: Mapping[str, str], units: Mapping[str, str]) -> tuple[MetricSummary, ...]:
    """Windowed summaries of the counter and histogram metrics in `frame` (METRIC, TS, VALUE,
    label columns). `kinds`: metric (base name for histograms) -> counter | histogram."""
    labels = [c for c in frame.columns if c.startswith(LABEL)]
    counters = [m for m, k in kinds.items() if k == "counter"]
    histograms = [m for m, k in kinds.items() if k == "histogram"]
    out: list[MetricSummary] = []
    c = frame.filter(pl.col(METRIC).is_in(counters))
    if not c.is_empty():
        out += _counter_summaries(c.with_columns(series_key(labels).alias(SERIES)), units)
    base = pl.col(METRIC).str.replace(r"(_bucket|_sum|_count)$", "")
    h = frame.filter(base.is_in(histograms) & pl.col(METRIC).str.contains(r"(_bucket|_sum|_count)$"))
    if not h.is_empty():
        le = label("le")
        h = h.with_columns(
            base.alias("__base"),
            pl.col(METRIC).str.extract(r"(_bucket|_sum|_count)$").alias("__part"),
            series_key(labels, without=("le",)).alias(SERIES),
            (_float_text(le) if le in h.columns else pl.lit(None, pl.Float64)).alias("__le"),
        )
        out += _histogram_summaries(h, units)
    return tuple(out)


def _windows(frame: pl.DataFrame, group: list[str]) -> pl.DataFrame:
    """Each sample's increase (`__inc`) and window (`__w`); a series seen at one time only is
    cumulative: its value is the total since the process started."""
    window_ns = WINDOW_S * 1_000_000_000
    many = pl.col(TS).n_unique().over(group) > 1
    return frame.with_columns(
        pl.when(many).then(counter_increase(VALUE, group, TS)).otherwise(pl.col(VALUE)).alias("__inc"),
        pl.when(many).then(pl.col(VALUE) < pl.col(VALUE).shift(1).over(group, order_by=TS)).otherwise(False).fill_null(False).alias("__reset"),
        (~many).alias("__cumulative"),
        pl.when(many).then((pl.col(TS) // window_ns) * window_ns).otherwise(pl.col(TS)).alias("__w"),
    ).filter(pl.col("__inc").is_not_null() & pl.col("__inc").is_finite())


def _counter_summaries(frame: pl.DataFrame, units: Mapping[str, str]) -> list[MetricSummary]:
    rows = (
        _windows(frame, [METRIC, SERIES])
        .group_by(METRIC, SERIES, "__w")
        .agg(pl.col("__inc").sum().alias("count"), pl.col("__reset").sum().alias("resets"), pl.col("__cumulative").first())
        .sort(METRIC, SERIES, "__w")
    )
    return [
        MetricSummary(
            r[METRIC], r[SERIES], "counter", units.get(r[METRIC], ""), *_window_text(r["__w"], r["__cumulative"]), bool(r["__cumulative"]),
            float(r["count"]), resets=int(r["resets"]),
        )
        for r in rows.iter_rows(named=True)  # one per series and window: a summary, not data rows
    ]


def _histogram_summaries(frame: pl.DataFrame, units: Mapping[str, str]) -> list[MetricSummary]:
    group = ["__base", SERIES, "__w"]
    inc = _windows(frame, ["__base", SERIES, "__part", "__le"])
    totals = inc.group_by(group).agg(
        pl.col("__inc").filter(pl.col("__part") == "_count").sum().alias("count"),
        pl.col("__inc").filter(pl.col("__part") == "_sum").sum().alias("sum"),
        pl.col("__cumulative").first(),
    )
    buckets = (
        inc.filter((pl.col("__part") == "_bucket") & pl.col("__le").is_not_null())
        .group_by(*group, "__le").agg(pl.col("__inc").sum().alias("cum"))
        .with_columns(
            pl.col("__le").shift(1).over(group, order_by="__le").fill_null(0.0).alias("__lo"),
            pl.col("cum").shift(1).over(group, order_by="__le").fill_null(0.0).alias("__cum_lo"),
            pl.col("cum").max().over(group).alias("__total"),
            pl.col("__le").filter(pl.col("__le").is_finite()).max().over(group).alias("__top"),
        )
    )
    estimates = []
    for name, q in QUANTILES.items():
        rank = pl.col("__total") * q
        hit = buckets.filter((pl.col("__total") > 0) & (pl.col("cum") >= rank)).sort("__le").group_by(group).first()
        inside = pl.col("__lo") + (pl.col("__le") - pl.col("__lo")) * (rank - pl.col("__cum_lo")) / (pl.col("cum") - pl.col("__cum_lo"))
        estimates.append(
            hit.select(
                *group,
                pl.lit(name).alias("q"),
                # In the +Inf bucket the best statement is the highest finite bound (histogram_quantile's answer).
                pl.when(pl.col("__le").is_infinite()).then(pl.col("__top")).otherwise(inside).alias("estimate"),
                pl.format("({}, {}]", pl.col("__lo").round(6), pl.col("__le").round(6)).alias("bucket"),
            )
        )
    quantiles = pl.concat(estimates).group_by(group).agg(pl.col("q"), pl.col("estimate"), pl.col("bucket")) if estimates else None
    rows = totals.join(quantiles, on=group, how="left") if quantiles is not None else totals
    out = []
    for r in rows.sort(group).iter_rows(named=True):  # one per series and window
        qs = dict(zip(r.get("q") or [], r.get("estimate") or []))
        bs = dict(zip(r.get("q") or [], r.get("bucket") or []))
        count = float(r["count"] or 0.0)
        out.append(
            MetricSummary(
                r["__base"], r[SERIES], "histogram", units.get(r["__base"], ""), *_window_text(r["__w"], r["__cumulative"]),
                bool(r["__cumulative"]), count, mean=(float(r["sum"]) / count) if count > 0 and r["sum"] is not None else None,
                quantiles={k: float(v) for k, v in qs.items() if v is not None and math.isfinite(v)},
                quantile_buckets={k: str(v).replace("inf", "+Inf") for k, v in bs.items() if v is not None},
            )
        )
    return out


def _window_text(start_ns: int, cumulative: bool) -> tuple[str, str]:
    if cumulative:  # totals since the process started, read at this instant
        at = _iso(start_ns)
        return at, at
    return _iso(start_ns), _iso(start_ns + WINDOW_S * 1_000_000_000)


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

