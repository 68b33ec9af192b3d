"""The taxonomy of report-contract.md ("Stable identifiers"), stated once: data only.

Instability modes map to a diagnostic domain (and supporting domains); serving patterns name
operational behaviours, each with a domain its rule file chooses. For every mode and pattern the
tool ships one rule whose id equals it (rules/*.yaml). Nothing here imports from the package:
the rule loader, the gate, the scorer, the docs and the tests read these tables.
"""

from __future__ import annotations

KINDS = ("mode", "pattern")  # a rule's `kind`

# mode -> (domain, supporting domains)
MODES: dict[str, tuple[str, tuple[str, ...]]] = {
    "latency-asymmetry-drift": ("AI.07", ("AI.04",)),
    "memory-path-incoherence": ("AI.07", ()),
    "interconnect-capacity-inaccessibility": ("AI.11", ("AI.01",)),
    "virtualization-control-distortion": ("AI.14", ()),
    "migration-reconfiguration-risk": ("AI.20", ()),
}

PATTERNS = (
    "batch-scheduling-conflict",
    "burst-amplification",
    "slot-locking",
    "idle-overload-oscillation",
    "energy-latency-mismatch",
    "retry-amplification",
    "queue-wait-dominance",
    "sla-degradation-without-shortage",
)

DOMAINS = ("AI.01", "AI.04", "AI.07", "AI.11", "AI.14", "AI.20", "AI.27")

# Scenarios without an instability (the simulator's baselines, the controls of a labelled
# suite): healthy load, and short bursts whose queueing drains without cost.
BASELINES = ("healthy", "legitimate-queueing")
