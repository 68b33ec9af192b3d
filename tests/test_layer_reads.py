"""Every reader after the request paths asks the layers for the columns it uses (docs/scale.md,
"Layers on disk"): on a trace read in work units the layers are on disk, one file per column,
and a reader that takes a whole layer would load every column of it (gigabytes at 100M rows)."""

from __future__ import annotations

from pathlib import Path

import pytest

from coherence_diag import analyze
from coherence_diag.layer_store import Layers
from coherence_diag.visuals import build_visuals

SAMPLES = sorted(Path(__file__).resolve().parents[1].glob("sample_traces/*.parquet"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_no_reader_after_the_paths_reads_a_whole_layer(path, monkeypatch):
    whole: list[str] = []
    read = Layers.read

    def read_asking_for_columns(self, name, columns=None, *, events=None, ordered=True):  # type: ignore[no-untyped-def]
        if columns is None:
            whole.append(f"read({name!r})")
        return read(self, name, columns, events=events, ordered=ordered)

    def getitem(self, name):  # type: ignore[no-untyped-def]
        whole.append(f"[{name!r}]")
        return read(self, name, self.schema(name))

    monkeypatch.setattr(Layers, "read", read_asking_for_columns)
    monkeypatch.setattr(Layers, "__getitem__", getitem)
    analysis = analyze(path, with_features=True)
    assert list(build_visuals(analysis))
    assert analysis.series is not None
    assert whole == []
