"""The four coherence indices: CI, DI, WPI, HCL. Definitions and reasoning: docs/indices.md.

Each index is in [0, 1] or None (not computable from this trace, with the missing columns in
`evaluability`). DI, WPI and HCL: higher is worse. CI: higher is more coherent.
"""

from __future__ import annotations

from coherence_diag.features import FeatureContext, FeatureValues
from coherence_diag.model import Evaluability, Indices

# Features the indices read (computed alongside those the rules need).
FEATURES_USED = frozenset({"utilization_gap", "delay_share"})


def compute(ctx: FeatureContext, values: FeatureValues) -> tuple[Indices, dict[str, Evaluability]]:
    evaluability: dict[str, Evaluability] = {}

    def from_feature(index: str, feature: str) -> float | None:
        value = values.values.get(feature)
        if value is None:
            missing = values.missing.get(feature, ())
            why = "missing columns" if missing else "the trace has no data for it"
            evaluability[index] = Evaluability(False, missing, why)
            return None
        evaluability[index] = Evaluability(True)
        return min(1.0, max(0.0, value))

    hcl = from_feature("HCL", "utilization_gap")
    di = from_feature("DI", "delay_share")
    for name in ("CI", "WPI"):
        evaluability[name] = Evaluability(False, (), "index computation is not implemented in this version")
    return Indices(CI=None, DI=di, WPI=None, HCL=hcl), evaluability
