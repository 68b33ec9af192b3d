"""Features: named scalar measurements of a trace that rules and indices read.

`registry.py` declares the machinery; each sibling module registers one family of features.
Generated reference: docs/features.md.
"""

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

# Importing a family registers its features.
from coherence_diag.features import core  # noqa: E402,F401  isort: skip

__all__ = ["FEATURES", "GROUPS", "FeatureContext", "FeatureSpec", "FeatureValues", "GroupResult", "compute", "feature_group"]
