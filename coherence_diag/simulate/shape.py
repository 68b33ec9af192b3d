"""Structural variants: orthogonal knobs that change the shape of the fleet a scenario runs on.

A `Shape` says, knob by knob, which structural level to use; a knob left at None keeps the
scenario's own level (so `Shape()` is the scenario exactly as catalogued). `variants.py` applies
a shape to a scenario; each scenario declares (`Applies`) the levels its condition is
physically meaningful in.

| knob | levels | what changes physically |
|---|---|---|
| fleet | colocated, pools, disaggregated | one pool of unified devices (prefill and decode on the same device, no KV transfer) / several independent unified pools (one per accelerator class) / prefill and decode pools with KV transfer |
| clients | no-timeout, timeout, retry | clients wait forever / give up at a deadline / give up and retry |
| dispatch | continuous, tick, affinity | dispatch on every event / a periodic dispatcher that places work only at its passes / routing that prefers a per-request device subset and spills over when it is full |
| batch | shared-queue, external-holds | batch jobs go through the serving scheduler / an external batch system holds serving devices for minutes (no scheduler rows) |
| telemetry | any of predicted_ms, sm_active, kv_cache_util, network, hypervisor off | the column or layer is absent from the trace (the physics is unchanged) |
| length_s | 180 .. 1800 | length of the arrival window (3 to 30 minutes) |

This module is data only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

FLEETS = ("colocated", "pools", "disaggregated")
CLIENTS = ("no-timeout", "timeout", "retry")
DISPATCHES = ("continuous", "tick", "affinity")
BATCH_PLACEMENTS = ("shared-queue", "external-holds")
TELEMETRY_PARTS = ("predicted_ms", "sm_active", "kv_cache_util", "network", "hypervisor")
MIN_LENGTH_S = 180.0
MAX_LENGTH_S = 1800.0

KNOB_LEVELS: dict[str, tuple[str, ...]] = {
    "fleet": FLEETS,
    "clients": CLIENTS,
    "dispatch": DISPATCHES,
    "batch": BATCH_PLACEMENTS,
}


@dataclass(frozen=True)
class Telemetry:
    """Which optional telemetry the written trace carries (True = present)."""

    predicted_ms: bool = True
    sm_active: bool = True
    kv_cache_util: bool = True
    network: bool = True
    hypervisor: bool = True

    @classmethod
    def without(cls, *parts: str) -> Telemetry:
        unknown = set(parts) - set(TELEMETRY_PARTS)
        if unknown:
            raise ValueError(f"unknown telemetry part(s) {sorted(unknown)}; expected some of {', '.join(TELEMETRY_PARTS)}")
        return cls(**{p: p not in parts for p in TELEMETRY_PARTS})

    @property
    def absent(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(self) if not getattr(self, f.name))

    @property
    def label(self) -> str:
        absent = self.absent
        if not absent:
            return "full"
        return "minimal" if len(absent) == len(TELEMETRY_PARTS) else "no-" + "+".join(absent)


@dataclass(frozen=True)
class Shape:
    fleet: str | None = None
    clients: str | None = None
    dispatch: str | None = None
    batch: str | None = None
    telemetry: Telemetry = Telemetry()
    length_s: float | None = None

    def __post_init__(self) -> None:
        for knob, levels in KNOB_LEVELS.items():
            value = getattr(self, knob)
            if value is not None and value not in levels:
                raise ValueError(f"invalid {knob} level {value!r}; expected one of: {', '.join(levels)}")
        if self.length_s is not None and not (MIN_LENGTH_S <= self.length_s <= MAX_LENGTH_S):
            raise ValueError(f"invalid length_s {self.length_s!r}; expected {MIN_LENGTH_S:g} to {MAX_LENGTH_S:g} seconds")

    def level(self, knob: str) -> str | None:
        return getattr(self, knob)  # type: ignore[no-any-return]

    @property
    def label(self) -> str:
        """A compact, file-name-safe description, e.g. `colocated.retry.tick.external-holds.no-network.600s`."""
        parts = [getattr(self, k) or "native" for k in KNOB_LEVELS]
        parts.append(self.telemetry.label)
        parts.append("native-length" if self.length_s is None else f"{self.length_s:g}s")
        return ".".join(parts)


@dataclass(frozen=True)
class Applies:
    """The levels of each knob a scenario's condition is physically meaningful in; `why` says
    why a knob is restricted."""

    fleet: tuple[str, ...] = FLEETS
    clients: tuple[str, ...] = CLIENTS
    dispatch: tuple[str, ...] = DISPATCHES
    batch: tuple[str, ...] = BATCH_PLACEMENTS
    why: str = ""

    def levels(self, knob: str) -> tuple[str, ...]:
        return getattr(self, knob)  # type: ignore[no-any-return]

    def refusal(self, shape: Shape) -> str | None:
        """None when every set knob of `shape` is allowed, else what is not."""
        bad = [f"{k}={shape.level(k)}" for k in KNOB_LEVELS if shape.level(k) is not None and shape.level(k) not in self.levels(k)]
        if not bad:
            return None
        return f"{', '.join(bad)} not meaningful" + (f" ({self.why})" if self.why else "")
