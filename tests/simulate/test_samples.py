"""`python -m coherence_diag.simulate.samples DIR`: one small trace per scenario + labels.json."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from coherence_diag.simulate import SCENARIOS, simulate
from coherence_diag.simulate.samples import main

MAX_SAMPLE_BYTES = 3_000_000


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("samples")
    assert main([str(out)]) == 0
    return out


def test_one_small_trace_per_scenario(samples: Path) -> None:
    files = {p.name for p in samples.iterdir()}
    assert files == {f"{n}.parquet" for n in SCENARIOS} | {"labels.json"}
    for name in SCENARIOS:
        assert (samples / f"{name}.parquet").stat().st_size <= MAX_SAMPLE_BYTES, name


def test_labels_describe_each_file(samples: Path) -> None:
    labels = json.loads((samples / "labels.json").read_text())
    assert labels["schema"] == "coherence-diag-sample-labels/1"
    by_file = {e["file"]: e for e in labels["traces"]}
    for name, sc in SCENARIOS.items():
        entry = by_file[f"{name}.parquet"]
        assert (entry["scenario"], entry["kind"], entry["expected_rule"]) == (name, sc.kind, sc.expected_rule)
        assert entry["rows"] == pl.read_parquet(samples / entry["file"]).height


def test_samples_are_the_seed_0_simulation(samples: Path) -> None:
    assert pl.read_parquet(samples / "slot-locking.parquet").equals(simulate("slot-locking", 0))


def test_rerun_is_byte_identical(samples: Path, tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 0
    for name in ("labels.json", "healthy.parquet"):
        assert (tmp_path / name).read_bytes() == (samples / name).read_bytes()
