"""write_trace: every container round-trips to the same table, and writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag.errors import InputError
from coherence_diag.simulate import simulate, write_trace
from coherence_diag.simulate import writer as writer_mod
from coherence_diag.simulate.schema import COLUMNS, LAYER_COLUMNS

ORDER = ["layer", "event", "ts", "request_id", "attempt", "device", "queue", "link", "host", "phase"]


@pytest.fixture(scope="module")
def df() -> pl.DataFrame:
    # has every layer, both envs, retries, drops-free zombies, transfers and migrate events
    return pl.concat([simulate("migration-reconfiguration-risk", 2, duration_s=30), simulate("retry-amplification", 2, duration_s=20)])


def canon(frame: pl.DataFrame) -> pl.DataFrame:
    """Same columns, dtypes and a total row order, so containers can be compared exactly."""
    frame = frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in COLUMNS.items()])
    return frame.sort(ORDER + [c for c in COLUMNS if c not in ORDER], nulls_last=True)


def read_csv(path: Path) -> pl.DataFrame:
    raw = pl.read_csv(path, infer_schema=False)  # everything as text, then the contract types
    return raw.with_columns(
        pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="ns"),
        *[pl.col(c).cast(t) for c, t in COLUMNS.items() if c != "ts" and t != pl.Boolean],
        pl.col("virtualized").replace_strict({"true": True, "false": False}, default=None, return_dtype=pl.Boolean),
    )


def no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


class TestRoundTrip:
    def test_parquet(self, df: pl.DataFrame, tmp_path: Path) -> None:
        write_trace(df, tmp_path / "t.parquet")
        assert pl.read_parquet(tmp_path / "t.parquet").equals(df)
        assert no_temp_files(tmp_path)

    def test_csv(self, df: pl.DataFrame, tmp_path: Path) -> None:
        write_trace(df, tmp_path / "t.csv")
        text = (tmp_path / "t.csv").read_text(encoding="utf-8")
        header, first = text.splitlines()[:2]
        assert header.split(",") == list(df.columns)
        assert first.split(",")[0].endswith("Z") and "T" in first.split(",")[0]  # ISO-8601 UTC
        assert canon(read_csv(tmp_path / "t.csv")).equals(canon(df))

    def test_layers_directory(self, df: pl.DataFrame, tmp_path: Path) -> None:
        target = tmp_path / "by-layer"
        write_trace(df, str(target) + "/")  # trailing slash selects the per-layer layout
        files = sorted(p.name for p in target.iterdir())
        assert files == sorted(f"{layer}.parquet" for layer in df["layer"].unique())
        parts = []
        for f in target.iterdir():
            part = pl.read_parquet(f)
            layer = f.stem
            assert "layer" not in part.columns
            assert set(part.columns) == set(LAYER_COLUMNS[layer])
            parts.append(part.with_columns(layer=pl.lit(layer)))
        assert canon(pl.concat(parts, how="diagonal_relaxed")).equals(canon(df))

    def test_layers_columns_hold_all_the_layer_data(self, df: pl.DataFrame) -> None:
        """No layer has a non-null value in a column its per-layer file would drop."""
        for layer, cols in LAYER_COLUMNS.items():
            rows = df.filter(pl.col("layer") == layer)
            dropped = [c for c in df.columns if c not in cols and c != "layer" and rows[c].null_count() < rows.height]
            assert dropped == [], layer

    def test_shards_split_by_time(self, df: pl.DataFrame, tmp_path: Path) -> None:
        write_trace(df, tmp_path / "shards", fmt="shards", shards=5)
        files = sorted((tmp_path / "shards").iterdir())
        assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(5)]
        parts = [pl.read_parquet(f) for f in files]
        for a, b in zip(parts, parts[1:]):
            assert a["ts"].max() <= b["ts"].min()
        assert canon(pl.concat(parts)).equals(canon(df))

    def test_existing_directory_means_layers_and_is_replaced_whole(self, df: pl.DataFrame, tmp_path: Path) -> None:
        target = tmp_path / "out"
        target.mkdir()
        (target / "stale.parquet").write_bytes(b"old")
        write_trace(df, target)
        assert not (target / "stale.parquet").exists()
        assert (target / "scheduler.parquet").exists()
        assert no_temp_files(tmp_path)

    def test_creates_parent_directories(self, df: pl.DataFrame, tmp_path: Path) -> None:
        write_trace(df.head(100), tmp_path / "a" / "b" / "t.parquet")
        assert pl.read_parquet(tmp_path / "a" / "b" / "t.parquet").equals(df.head(100))


class TestAtomicity:
    def test_failed_file_write_leaves_nothing(self, df: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        def boom(frame: pl.DataFrame, path: Path) -> None:
            Path(path).write_bytes(b"partial")
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(writer_mod, "_write_parquet", boom)
        with pytest.raises(RuntimeError):
            write_trace(df, tmp_path / "t.parquet")
        assert list(tmp_path.iterdir()) == []

    def test_failed_write_keeps_the_previous_file(self, df: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        write_trace(df.head(10), tmp_path / "t.parquet")
        monkeypatch.setattr(writer_mod, "_write_parquet", lambda frame, path: (_ for _ in ()).throw(OSError(28, "No space left")))
        with pytest.raises(InputError, match="t.parquet"):
            write_trace(df, tmp_path / "t.parquet")
        assert pl.read_parquet(tmp_path / "t.parquet").equals(df.head(10))
        assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]

    def test_failed_directory_write_leaves_nothing(self, df: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        calls = []

        def second_fails(frame: pl.DataFrame, path: Path) -> None:
            calls.append(path)
            if len(calls) == 2:
                raise RuntimeError("interrupted")
            frame.write_parquet(path)

        monkeypatch.setattr(writer_mod, "_write_parquet", second_fails)
        with pytest.raises(RuntimeError):
            write_trace(df, tmp_path / "layers", fmt="layers")
        assert list(tmp_path.iterdir()) == []


class TestBadTargets:
    def test_unknown_suffix(self, df: pl.DataFrame, tmp_path: Path) -> None:
        with pytest.raises(InputError) as exc:
            write_trace(df, tmp_path / "t.json")
        assert "t.json" in str(exc.value) and ".parquet" in str(exc.value)

    def test_unknown_format(self, df: pl.DataFrame, tmp_path: Path) -> None:
        with pytest.raises(InputError, match="xlsx"):
            write_trace(df, tmp_path / "t.parquet", fmt="xlsx")

    def test_missing_required_columns(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match="layer"):
            write_trace(pl.DataFrame({"ts": [1], "event": ["x"]}), tmp_path / "t.parquet")

    def test_file_where_directory_expected(self, df: pl.DataFrame, tmp_path: Path) -> None:
        (tmp_path / "f").write_text("x")
        with pytest.raises(InputError, match="f"):
            write_trace(df, tmp_path / "f", fmt="layers")

    @pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
    def test_unwritable_directory(self, df: pl.DataFrame, tmp_path: Path) -> None:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(InputError, match="ro"):
                write_trace(df, ro / "t.parquet")
        finally:
            ro.chmod(0o700)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data(), fmt=st.sampled_from(["parquet", "csv", "layers", "shards"]))
def test_any_slice_round_trips(df: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, fmt: str) -> None:
    start = data.draw(st.integers(0, df.height - 1))
    length = data.draw(st.integers(1, 400))
    part = df.slice(start, length)
    target = tmp_path_factory.mktemp("rt") / ("t.csv" if fmt == "csv" else "t.parquet" if fmt == "parquet" else "d")
    write_trace(part, target, fmt=fmt, shards=3)
    if fmt == "parquet":
        back = pl.read_parquet(target)
    elif fmt == "csv":
        back = read_csv(target)
    elif fmt == "shards":
        back = pl.concat([pl.read_parquet(f) for f in sorted(target.iterdir())])
    else:
        back = pl.concat([pl.read_parquet(f).with_columns(layer=pl.lit(f.stem)) for f in target.iterdir()], how="diagonal_relaxed")
    assert canon(back).equals(canon(part))


def test_default_shard_count(df: pl.DataFrame, tmp_path: Path) -> None:
    write_trace(df, tmp_path / "s", fmt="shards")
    assert len(list((tmp_path / "s").iterdir())) == 4


@pytest.mark.parametrize("shards", [0, -2, 1.5, True])
def test_bad_shard_count(df: pl.DataFrame, tmp_path: Path, shards: object) -> None:
    with pytest.raises(InputError, match="shard"):
        write_trace(df, tmp_path / "s", fmt="shards", shards=shards)  # type: ignore[arg-type]
