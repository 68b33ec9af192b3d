"""A finding's evidence, typed: named items, each a feature's value with its unit or a detail.

The rules engine builds it from the features a rule lists under `evidence:`: each feature's
value with the unit its `FeatureSpec` declares, then the structured details its group hangs on
it (pool and device names, time windows, lists of episodes), which carry no unit of their own.
Renderers read the unit from here instead of guessing it from a name or a magnitude.

`Evidence` reads like the JSON object `{name: value}` of report-contract.md (a read-only
mapping, compared equal to a dict with the same items), so `finding.evidence["x"]` keeps working.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

EvidenceKind = Literal["value", "detail"]


@dataclass(frozen=True)
class EvidenceItem:
    """One named piece of evidence."""

    name: str
    value: object  # a number (None: undefined in this trace), text, a list, or a list of records
    unit: str | None = None  # the feature's unit (features.UNITS) for a value; None for a detail
    kind: EvidenceKind = "detail"  # "value": a feature's value; "detail": structured context

    @property
    def records(self) -> tuple[Mapping[str, object], ...] | None:
        """The value as records (episodes, windows, devices: a non-empty list of mappings), else None."""
        value = self.value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Mapping) for v in value):
            return tuple(value)
        return None


class Evidence(Mapping[str, object]):
    """The evidence of a finding: items in a fixed order (the rule's `evidence:` order, details
    after the value they belong to); a later item of the same name replaces an earlier one in
    its place, as a dict update would."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[EvidenceItem] = ()) -> None:
        by_name: dict[str, EvidenceItem] = {}
        for item in items:
            by_name[item.name] = item
        self._items: tuple[EvidenceItem, ...] = tuple(by_name.values())

    @classmethod
    def of(cls, values: Mapping[str, object]) -> Evidence:
        """Evidence from a plain mapping: every entry a detail without a unit."""
        return values if isinstance(values, Evidence) else cls(EvidenceItem(str(k), v) for k, v in values.items())

    @property
    def entries(self) -> tuple[EvidenceItem, ...]:
        return self._items

    def entry(self, name: str) -> EvidenceItem:
        for item in self._items:
            if item.name == name:
                return item
        raise KeyError(name)

    def units(self) -> dict[str, str]:
        """name -> unit of every item that has one (the feature values), in order."""
        return {item.name: item.unit for item in self._items if item.unit is not None}

    def with_detail(self, name: str, value: object) -> Evidence:
        """A copy with one more detail (or `name` replaced by it)."""
        return Evidence((*self._items, EvidenceItem(name, value)))

    def __getitem__(self, name: str) -> object:
        return self.entry(name).value

    def __iter__(self) -> Iterator[str]:
        return (item.name for item in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Evidence({list(self._items)!r})"

    def __getstate__(self) -> tuple[EvidenceItem, ...]:  # findings cross process boundaries (rules score)
        return self._items

    def __setstate__(self, state: tuple[EvidenceItem, ...]) -> None:
        self._items = state
