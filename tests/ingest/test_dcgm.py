"""The `dcgm` source: dcgm-exporter samples become gpu samples in the trace's units, one device per
GPU or MIG instance, device_info from the labels; profiling fields a device does not report stay
absent (never 0) and the provenance says HCL is unverifiable there."""

from __future__ import annotations

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coherence_diag import schema
from coherence_diag.convert import open_inputs
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "dcgm" / "dcgm_mig_vgpu.prom"
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LABELS = 'gpu="{gpu}",UUID="GPU-{gpu}",pci_bus_id="00000000:0{gpu}:00.0",device="nvidia{gpu}",modelName="NVIDIA H100 80GB HBM3",Hostname="n1"'

gpus = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=100),  # GPU_UTIL, percent
        st.one_of(st.none(), st.floats(min_value=0, max_value=1)),  # SM_ACTIVE, absent on some devices
        st.floats(min_value=0, max_value=1000),  # POWER_USAGE, W
        st.integers(min_value=0, max_value=81920),  # FB_USED, MiB
    ),
    min_size=1, max_size=6,
)


@SETTINGS
@given(gpus)
def test_values_are_the_exporters_values_in_trace_units_and_absent_stays_absent(tmp_path_factory, devices):
    tmp_path = tmp_path_factory.mktemp("dcgm")
    lines = ["# ts=1714564800"]
    for gpu, (util, sm, power, fb) in enumerate(devices):
        labels = LABELS.format(gpu=gpu)
        lines += [f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {util}", f"DCGM_FI_DEV_POWER_USAGE{{{labels}}} {power!r}", f"DCGM_FI_DEV_FB_USED{{{labels}}} {fb}"]
        if sm is not None:
            lines.append(f"DCGM_FI_PROF_SM_ACTIVE{{{labels}}} {sm!r}")
    path = tmp_path / "d.prom"
    path.write_text("\n".join(lines) + "\n")
    source = open_inputs([("dcgm", str(path))])
    frame = source.scan().collect()
    given_columns = {c.column for c in source.provenance.columns if c.layer == "gpu" and c.status != "absent"}
    samples = frame.filter(pl.col("event") == "sample")
    for column in samples.columns:
        if column in schema.LAYER_COLUMNS["gpu"] and samples[column].null_count() < samples.height:
            assert column in given_columns, column
    assert samples.height == len(devices)
    for row in samples.iter_rows(named=True):
        util, sm, power, fb = devices[int(row["device"].removeprefix("GPU-"))]
        assert row["gpu_util"] == util / 100
        assert row["power_w"] == power and row["mem_used_bytes"] == fb * 2**20
        assert row.get("sm_active") == sm  # None where the exporter gave none: never 0
    silent = [d for d in devices if d[1] is None]
    notes = " ".join(source.provenance.sources[0].notes)
    assert ("HCL is unverifiable" in notes) == bool(silent)


def test_mig_instances_are_devices_with_their_profile_and_the_vgpu_guest_is_named():
    source = open_inputs([("dcgm", str(FIXTURE))])
    frame = source.scan().collect()
    info = frame.filter(pl.col("event") == "device_info").sort("device")
    assert info.height == 4  # one H100, two MIG instances of one A100, one vGPU guest
    mig = info.filter(pl.col("mig_profile").is_not_null())
    assert sorted(mig["mig_profile"]) == ["1g.5gb", "3g.20gb"]
    assert all(d.startswith("GPU-9a8b7c6d-1e2f-4a3b-8c4d-5e6f7a8b9c0d/") for d in mig["device"])
    assert set(info["accelerator"]) == {"NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB", "GRID A100D-40C"}
    vgpu = frame.filter((pl.col("event") == "sample") & (pl.col("host") == "vm-guest-b"))
    assert vgpu["sm_active"].null_count() == vgpu.height and vgpu["mem_bw_util"].null_count() == vgpu.height
    notes = " ".join(source.provenance.sources[0].notes)
    assert "HCL is unverifiable" in notes and "GPU-0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f" in notes
    assert "DCGM_FI_DEV_SM_CLOCK" in notes  # listed as not converted


def test_pool_from_the_pod_label_through_the_map(tmp_path):
    mapping = tmp_path / "map.yaml"
    mapping.write_text("map:\n  pool:\n    from: namespace\n    values: {serving: chat, batch: embed}\n")
    frame = open_inputs([("dcgm", str(FIXTURE))], map_file=mapping).scan().collect()
    pools = frame.filter(pl.col("event") == "sample").group_by("namespace").agg(pl.col("pool").unique())
    assert {r["namespace"]: r["pool"] for r in pools.iter_rows(named=True)} == {"serving": ["chat"], "batch": ["embed"], None: [None]}


def test_samples_without_a_uuid_or_host_and_index_are_not_placed(tmp_path):
    path = tmp_path / "d.prom"
    path.write_text('# ts=1714564800\nDCGM_FI_DEV_GPU_UTIL{gpu="0",Hostname="n1"} 50\nDCGM_FI_DEV_GPU_UTIL{modelName="x"} 40\n')
    source = open_inputs([("dcgm", str(path))])
    samples = source.scan().collect().filter(pl.col("event") == "sample")
    assert samples["device"].to_list() == ["n1:0"]
    audit = source.unmapped()
    assert int(audit.filter(pl.col("reason") == "unmapped_record")["rows"].sum()) == 1
