"""Values the user supplies for columns no source observes: `--set LAYER.COLUMN=VALUE` flags and
a `--map FILE` (YAML):

    set:                          # a constant for every row of the layer
      scheduler.slo_ms: 20000
      scheduler.pool: chat
    map:                          # a column's value looked up from another column's value
      host:                       # the column to fill ...
        from: device              # ... from this column of the same row (a schema column, or an
                                  # extra column a source keeps, e.g. `pod` of the dcgm source)
        values: {gpu-3f2a: node-1, gpu-77c1: node-2}

Each value is checked against its column's kind (schema.py) before anything is read; provenance
records it as `supplied` (by the flag, or by the file).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from coherence_diag import schema
from coherence_diag.errors import InputError

Value = str | int | float | bool
# `from` may also name an extra column a source keeps (the metrics sources' `pod`, `namespace`, `model`).
_EXTRA_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Lookup:
    column: str
    key: str  # the column whose value is looked up
    values: dict[str, str]
    by: str  # "--map FILE"


@dataclass(frozen=True)
class UserValues:
    constants: dict[tuple[str, str], tuple[Value, str]] = field(default_factory=dict)  # (layer, column) -> (value, by)
    lookups: tuple[Lookup, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.constants or self.lookups)


def parse(sets: list[str] | None = None, map_file: Path | None = None) -> UserValues:
    constants: dict[tuple[str, str], tuple[Value, str]] = {}
    lookups: list[Lookup] = []
    if map_file is not None:
        data = _load(map_file)
        by = f"--map {map_file}"
        for key, value in (data.get("set") or {}).items():
            layer, column = _target(str(key), f"{map_file}: set")
            constants[(layer, column)] = (_typed(column, value, f"{map_file}: set.{key}"), by)
        for column, spec in (data.get("map") or {}).items():
            where = f"{map_file}: map.{column}"
            if str(column) not in schema.COLUMNS or schema.COLUMNS[str(column)].kind != "string":
                raise InputError(
                    f"{where}: {column!r} is not a text column of the trace schema; expected e.g. host, device, pool", path=str(map_file)
                )
            if not isinstance(spec, dict) or "from" not in spec or not isinstance(spec.get("values"), dict):
                raise InputError(f"{where}: expected {{from: COLUMN, values: {{KEY: VALUE, ...}}}}", path=str(map_file))
            key_column = str(spec["from"])
            if key_column not in schema.COLUMNS and not _EXTRA_NAME.fullmatch(key_column):
                raise InputError(
                    f"{where}.from: {key_column!r} is not a column of the trace schema or an extra column name (e.g. pod, namespace)",
                    path=str(map_file),
                )
            values = {str(k): str(_typed(str(column), v, f"{where}.values.{k}")) for k, v in spec["values"].items()}
            lookups.append(Lookup(str(column), key_column, values, by))
    for item in sets or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise InputError(f"--set {item!r}: expected LAYER.COLUMN=VALUE, e.g. scheduler.slo_ms=20000")
        layer, column = _target(key.strip(), f"--set {item!r}")
        constants[(layer, column)] = (_typed(column, yaml.safe_load(text) if text.strip() else text, f"--set {item!r}"), "--set")
    return UserValues(constants, tuple(lookups))


def _load(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: not a readable map file ({first}); expected YAML with `set` and/or `map`", path=str(path)) from None
    if not isinstance(data, dict) or not set(data) <= {"set", "map"} or not data:
        raise InputError(f"{path}: expected a YAML mapping with `set` and/or `map` (found {type(data).__name__})", path=str(path))
    return data


def _target(key: str, where: str) -> tuple[str, str]:
    layer, _, column = key.partition(".")
    if layer not in schema.LAYERS or column not in schema.LAYER_COLUMNS[layer] or column in ("ts", "event"):
        raise InputError(f"{where}: {key!r} names no settable column; expected LAYER.COLUMN such as scheduler.slo_ms or gpu.accelerator")
    return layer, column


def _typed(column: str, value: object, where: str) -> Value:
    kind = schema.COLUMNS[column].kind
    expected = schema.describe_kind(kind)
    ok: Value | None = None
    if kind == "string" and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        ok = str(value)
        if column in schema.ALLOWED_VALUES and ok not in schema.ALLOWED_VALUES[column]:
            ok = None
    elif kind == "bool" and isinstance(value, bool):
        ok = value
    elif kind in ("int", "count") and isinstance(value, int) and not isinstance(value, bool):
        ok = value if (kind == "int" or value >= 0) else None
    elif kind in ("float", "duration_ms", "fraction") and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        fine = math.isfinite(number) and (kind == "float" or number >= 0) and (kind != "fraction" or number <= 1)
        ok = number if fine else None
    if ok is not None and column in schema.BOUNDS:
        bound = schema.BOUNDS[column]
        number = float(ok)
        if number > bound.high or (bound.low is not None and number < bound.low):
            ok = None
            expected += f"; {bound.expected}"
    if ok is None:
        allowed = schema.ALLOWED_VALUES.get(column)
        if allowed:
            expected += "; one of " + ", ".join(allowed)
        raise InputError(f"{where}: {value!r} is not a valid {column}; expected {expected}")
    return ok
