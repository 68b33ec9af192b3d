"""Shared inputs of the report tests: a few sample traces, an unusable file, a hostile trace."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.conftest import REPO

SAMPLES = REPO / "sample_traces"
SCRIPT_PAYLOAD = "<script>alert(1)</script>"
IMG_PAYLOAD = "<img src=x onerror=alert(1)>"


def sample(name: str) -> str:
    return str(SAMPLES / f"{name}.parquet")


def write_hostile_trace(target: Path) -> Path:
    """A sample trace whose pool, env and device names carry markup payloads."""
    frame = pl.read_parquet(SAMPLES / "slot-locking.parquet")
    frame = frame.with_columns(
        (pl.lit(SCRIPT_PAYLOAD) + pl.col("pool")).alias("pool"),
        (pl.lit(SCRIPT_PAYLOAD) + pl.col("env")).alias("env"),
        *((pl.lit(IMG_PAYLOAD) + pl.col(c)).alias(c) for c in ("device", "src_device", "dst_device")),
    )
    frame.write_parquet(target)
    return target


@pytest.fixture(scope="session")
def hostile_trace(tmp_path_factory) -> Path:
    return write_hostile_trace(tmp_path_factory.mktemp("hostile") / "hostile.parquet")


@pytest.fixture(scope="session")
def bad_trace(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "broken.parquet"
    path.write_text("this is not a parquet file\n")
    return path
