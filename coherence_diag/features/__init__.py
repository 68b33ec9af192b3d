"""Features: named scalar measurements of a trace that rules and indices read.

`registry.py` holds the machinery; every other module in this package registers one family of
features when imported (all are imported here, in name order). Generated reference:
docs/features.md.
"""

import importlib
import pkgutil

from coherence_diag.features.registry import (
    FEATURES,
    GROUPS,
    FeatureContext,
    FeatureSpec,
    FeatureValues,
    GroupResult,
    compute,
    feature_group,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "registry":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["FEATURES", "GROUPS", "FeatureContext", "FeatureSpec", "FeatureValues", "GroupResult", "compute", "feature_group"]
