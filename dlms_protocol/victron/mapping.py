"""Meter readings -> Victron grid-meter paths, with Victron units and signs.

The table (which OBIS code feeds which path, unit conversions, text formats) is data:
``dlms_protocol/data/victron_mapping.json``, merged with an optional user file. This module
applies it and derives what meters don't send, because Venus needs it and the derivation is
exact (never an estimate):

* net power = import - export, per phase and in total (positive = buying from the grid);
* signed per-phase currents: the meter's current (often unsigned) takes the sign of the phase's
  net power; without a known phase power the current is left out rather than published unsigned
  (an unsigned current during feed-in is a wrong value: victronenergy/venus#174);
* totals from complete phase sets (power, energy, current); the total power on L1 for meters
  that send no per-phase power at all (option ``total_power_on_l1``), because systemcalc reads
  only ``/Ac/Lx/Power``;
* power factor P/(U*I) where the meter sends none.

A reading without a unit where the path needs one, or with a unit the table does not know, is
skipped and logged once: a ×1000 error in a counter is worse than a missing value.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from ..errors import ConfigurationError
from ..model import MeterData, Reading
from ..obis import Obis

LOG = logging.getLogger(__name__)

DEFAULT_FILE = Path(__file__).resolve().parent.parent / "data" / "victron_mapping.json"
PHASES = (1, 2, 3)
_PARTS = ("value", "import", "export")
_TOTAL_ON_L1 = ("auto", "yes", "no")


@dataclass(frozen=True)
class PathSpec:
    path: str
    unit: Optional[str]  # None: text path
    format: Optional[str] = None
    counter: bool = False

    def text(self, value: Any) -> str:
        if self.format and isinstance(value, (int, float)):
            return self.format % value
        return str(value)


@dataclass(frozen=True)
class Source:
    path: str
    patterns: Tuple[Obis, ...]
    part: str = "value"
    sign: int = 1
    sign_from: Optional[str] = None


@dataclass
class Mapped:
    """One frame mapped to paths. ``values`` holds only what this frame delivered or derived."""

    values: Dict[str, Any] = field(default_factory=dict)
    phases: Set[int] = field(default_factory=set)  # phases this frame had data for
    total_on_l1: bool = False  # /Ac/L1/Power was filled from the total


def _phase_of(path: str) -> Optional[int]:
    if path.startswith("/Ac/L") and len(path) > 6 and path[5] in "123" and path[6] == "/":
        return int(path[5])
    return None


def _merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(base)
    for key in ("options", "units", "paths"):
        if key in override:
            if not isinstance(override[key], dict):
                raise ConfigurationError(f"mapping file: '{key}' must be an object",
                                         "see dlms_protocol/data/victron_mapping.json for the layout")
            merged = dict(base.get(key, {}))
            merged.update(override[key])
            out[key] = merged
    if "sources" in override:
        if not isinstance(override["sources"], list):
            raise ConfigurationError("mapping file: 'sources' must be a list",
                                     "see dlms_protocol/data/victron_mapping.json for the layout")
        replaced = {s.get("path") for s in override["sources"] if isinstance(s, dict)}
        out["sources"] = [s for s in base.get("sources", []) if s.get("path") not in replaced]
        out["sources"] += [s for s in override["sources"] if isinstance(s, dict) and s.get("obis")]
    return out


def load_table(user_file: Optional[str] = None) -> Dict[str, Any]:
    """The built-in table merged with a user's override file (same layout)."""
    table = json.loads(DEFAULT_FILE.read_text(encoding="utf-8"))
    if user_file:
        try:
            override = json.loads(Path(user_file).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(f"mapping file {user_file} cannot be read ({exc.strerror})",
                                     "check the path of mapping_file") from None
        except ValueError as exc:
            raise ConfigurationError(f"mapping file {user_file} is not valid JSON ({exc})",
                                     "fix the JSON syntax (a JSON linter shows the line)") from None
        if not isinstance(override, dict):
            raise ConfigurationError(f"mapping file {user_file} must hold a JSON object",
                                     "see dlms_protocol/data/victron_mapping.json for the layout")
        table = _merge(table, override)
    return table


class Mapper:
    """Compiled mapping table; ``map(data)`` is pure apart from the log-once bookkeeping and the
    phase memory: a meter that once sent L2/L3 data or per-phase power is 3-phase for good, so a
    later power-only telegram (many meters alternate a short and a long list) never puts the
    total on L1 in auto mode, where it would alternate with the real L1 value."""

    def __init__(self, user_file: Optional[str] = None, options: Optional[Dict[str, Any]] = None) -> None:
        table = load_table(user_file)
        self.options: Dict[str, Any] = dict(table.get("options", {}))
        if options:
            self.options.update({k: v for k, v in options.items() if v is not None})
        self.units: Dict[str, Dict[str, Decimal]] = {
            target: {src: Decimal(str(f)) for src, f in table_units.items()}
            for target, table_units in table.get("units", {}).items()
        }
        self.paths: Dict[str, PathSpec] = {}
        for path, spec in table.get("paths", {}).items():
            if not isinstance(spec, dict):
                raise ConfigurationError(f"mapping: path {path} needs an object", 'write {"unit": "W"}')
            unit = spec.get("unit")
            if unit is not None and unit not in self.units:
                raise ConfigurationError(f"mapping: path {path} has unit {unit!r} without a conversion table",
                                         "add it under 'units' or use one of " + ", ".join(self.units))
            self.paths[path] = PathSpec(path, unit, spec.get("format"), bool(spec.get("counter", False)))
        self.sources: List[Source] = []
        for raw in table.get("sources", []):
            self.sources.append(self._source(raw))
        media = self.options.get("media", [0, 1])
        self._media = set(media) if isinstance(media, list) else {0, 1}
        mode = str(self.options.get("total_power_on_l1", "auto")).lower()
        mode = {"true": "yes", "1": "yes", "on": "yes", "false": "no", "0": "no", "off": "no"}.get(mode, mode)
        if mode not in _TOTAL_ON_L1:
            raise ConfigurationError(f"total_power_on_l1 = {mode!r} is unknown", "use auto, yes or no")
        self.total_on_l1 = mode
        self.missing_part_is_zero = bool(self.options.get("missing_part_is_zero", False))
        self.pf_tolerance = Decimal(str(self.options.get("power_factor_tolerance", 0.05)))
        self._by_obis: Dict[Obis, List[Tuple[Source, int]]] = {}
        self._warned: Set[Tuple[str, str]] = set()
        self._three_phase = False  # phase memory, see the class docstring

    def _source(self, raw: Dict[str, Any]) -> Source:
        path = raw.get("path")
        if path not in self.paths:
            raise ConfigurationError(f"mapping: source for unknown path {path!r}",
                                     "add the path under 'paths' with its unit")
        codes = raw.get("obis")
        if isinstance(codes, str):
            codes = [codes]
        if not isinstance(codes, list) or not codes:
            raise ConfigurationError(f"mapping: source for {path} has no 'obis' list", 'write "obis": ["1.8.0"]')
        part = raw.get("part", "value")
        if part not in _PARTS:
            raise ConfigurationError(f"mapping: part {part!r} of {path} is unknown", "use value, import or export")
        sign = raw.get("sign", 1)
        if sign not in (1, -1):
            raise ConfigurationError(f"mapping: sign {sign!r} of {path} is neither 1 nor -1", "use 1 or -1")
        sign_from = raw.get("sign_from")
        if sign_from is not None and sign_from not in self.paths:
            raise ConfigurationError(f"mapping: sign_from {sign_from!r} of {path} is no known path",
                                     "name a power path such as /Ac/L1/Power")
        return Source(path, tuple(Obis.parse(str(c)) for c in codes), part, sign, sign_from)

    # ------------------------------------------------------------------ helpers
    def _warn_once(self, key: Tuple[str, str], msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            LOG.warning(msg, *args)

    def _matches(self, code: Obis) -> List[Tuple[Source, int]]:
        found = self._by_obis.get(code)
        if found is None:
            found = []
            if code.a is None or code.a in self._media:
                for src in self.sources:
                    for rank, pattern in enumerate(src.patterns):
                        if pattern.matches(code):
                            found.append((src, rank))
                            break
            if len(self._by_obis) < 4096:
                self._by_obis[code] = found
        return found

    def _convert(self, reading: Reading, spec: PathSpec) -> Optional[Decimal]:
        num = reading.numeric()
        if num is None:
            self._warn_once((spec.path, "type"), "victron: %s (%s) is not a number (%r); %s stays empty",
                            reading.code, reading.name or "", reading.value, spec.path)
            return None
        if not num.is_finite():
            return None
        table = self.units.get(spec.unit or "", {})
        unit = (reading.unit or "").strip()
        factor = table.get(unit)
        if factor is None and unit and unit.isupper():
            hits = [f for u, f in table.items() if u.upper() == unit]
            factor = hits[0] if len(hits) == 1 else None
        if factor is None:
            if not unit:
                self._warn_once((spec.path, "nounit"),
                                "victron: %s arrives without a unit; %s (in %s) stays empty - the meter "
                                "profile or a mapping file must give the unit", reading.code, spec.path, spec.unit)
            else:
                self._warn_once((spec.path, "unit:" + unit),
                                "victron: %s arrives in %r, which cannot be converted to %s for %s; it is "
                                "skipped (add the unit to 'units' in a mapping file)",
                                reading.code, unit, spec.unit, spec.path)
            return None
        return num * factor

    @staticmethod
    def _text(reading: Reading) -> Optional[str]:
        v = reading.value
        if isinstance(v, bytes):
            if v and all(32 <= b < 127 for b in v):
                return v.decode("ascii")
            return v.hex().upper() if v else None
        if v is None or isinstance(v, bool):
            return None
        text = str(v).strip()
        return text or None

    # -------------------------------------------------------------------- map
    def map(self, data: MeterData) -> Mapped:
        """Map one verified snapshot; absent paths are simply not in the result."""
        best: Dict[Source, Tuple[int, Reading]] = {}
        for reading in data.readings:
            code = reading.obis
            if code is None:
                continue
            for src, rank in self._matches(code):
                seen = best.get(src)
                if seen is None or rank < seen[0]:
                    best[src] = (rank, reading)

        parts: Dict[str, Dict[str, Decimal]] = {}
        texts: Dict[str, str] = {}
        sign_from: Dict[str, str] = {}
        for src, (_rank, reading) in best.items():
            spec = self.paths[src.path]
            if spec.unit is None:
                text = self._text(reading)
                if text is not None:
                    texts[src.path] = text
                continue
            value = self._convert(reading, spec)
            if value is None:
                continue
            parts.setdefault(src.path, {})[src.part] = value * src.sign
            if src.sign_from:
                sign_from[src.path] = src.sign_from

        values: Dict[str, Decimal] = {}
        for path, p in parts.items():
            if "value" in p:
                values[path] = p["value"]
            elif "import" in p and "export" in p:
                values[path] = p["import"] - p["export"]
            elif self.missing_part_is_zero:
                values[path] = p.get("import", Decimal(0)) - p.get("export", Decimal(0))
            else:
                missing = "export" if "import" in p else "import"
                self._warn_once((path, "part"), "victron: the meter sends %s but no %s for %s, so the net "
                                "value is unknown and %s stays empty (option missing_part_is_zero for meters "
                                "that never %s)", "import" if missing == "export" else "export", missing,
                                path, path, "feed in" if missing == "export" else "import")

        out = Mapped()
        phases = {ph for ph in (_phase_of(p) for p in list(values) + list(texts)) if ph}
        self._derive(values, phases, out)
        # a multi-phase meter's total on L1 is not L1's power: no sign or power factor from it
        guessed = {"/Ac/L1/Power"} if out.total_on_l1 and any(ph > 1 for ph in phases) else set()

        # signed currents: |I| with the sign of the phase's net power
        for path, power_path in sign_from.items():
            if path not in values:
                continue
            power = values.get(power_path) if power_path not in guessed else None
            if power is None:
                del values[path]
                self._warn_once((path, "sign"), "victron: %s has no sign source (%s is unknown), so it "
                                "is left out rather than published without a sign", path, power_path)
                continue
            mag = abs(values[path])
            values[path] = -mag if power < 0 else mag
        self._derive_after_currents(values, phases, guessed)

        for path, v in values.items():
            f = float(v)
            if math.isfinite(f):
                out.values[path] = f
        out.values.update(texts)
        out.phases = phases
        return out

    def _derive(self, values: Dict[str, Decimal], phases: Set[int], out: Mapped) -> None:
        top = max(phases) if phases else 0
        full = set(range(1, top + 1)) if top else set()

        def per_phase(fmt: str) -> Optional[List[Decimal]]:
            got = [values.get(fmt % ph) for ph in sorted(full)]
            if not full or any(v is None for v in got):
                return None
            return got  # type: ignore[return-value]

        phase_power = [ph for ph in PHASES if f"/Ac/L{ph}/Power" in values]
        if phase_power or any(ph > 1 for ph in phases):
            self._three_phase = True
        if "/Ac/Power" in values and not phase_power and self.total_on_l1 != "no":
            others = any(ph > 1 for ph in phases) or self._three_phase
            if self.total_on_l1 == "yes" or not others:
                values["/Ac/L1/Power"] = values["/Ac/Power"]
                out.total_on_l1 = True
                phases.add(1)
            else:
                self._warn_once(("/Ac/L1/Power", "3ph"),
                                "victron: this 3-phase meter sends total power only; Venus (systemcalc) reads "
                                "per-phase power, so set total_power_on_l1 = yes to publish the total on L1")
        if "/Ac/Power" not in values:
            got = per_phase("/Ac/L%d/Power")
            if got is not None:
                values["/Ac/Power"] = sum(got, Decimal(0))
        for direction in ("Forward", "Reverse"):
            total = f"/Ac/Energy/{direction}"
            if total not in values:
                got = per_phase("/Ac/L%d/Energy/" + direction)
                if got is not None:
                    values[total] = sum(got, Decimal(0))
            elif phases == {1} and f"/Ac/L1/Energy/{direction}" not in values:
                values[f"/Ac/L1/Energy/{direction}"] = values[total]
        if phases and "/Ac/Voltage" not in values:
            got = per_phase("/Ac/L%d/Voltage")
            if got is not None:
                values["/Ac/Voltage"] = sum(got, Decimal(0)) / len(got)

    def _derive_after_currents(self, values: Dict[str, Decimal], phases: Set[int], guessed: Set[str]) -> None:
        top = max(phases) if phases else 0
        full = range(1, top + 1)
        currents = [values.get(f"/Ac/L{ph}/Current") for ph in full]
        if top and "/Ac/Current" not in values and all(c is not None for c in currents):
            values["/Ac/Current"] = sum(currents, Decimal(0))  # type: ignore[arg-type]
        apparent = Decimal(0)
        complete = bool(top)
        limit = 1 + self.pf_tolerance
        for ph in full:
            p = values.get(f"/Ac/L{ph}/Power") if f"/Ac/L{ph}/Power" not in guessed else None
            u = values.get(f"/Ac/L{ph}/Voltage")
            i = values.get(f"/Ac/L{ph}/Current")
            if u is None or i is None:
                complete = False
                continue
            s = u * abs(i)
            apparent += s
            pf_path = f"/Ac/L{ph}/PowerFactor"
            if pf_path not in values and p is not None and s > 0:
                pf = abs(p) / s
                if pf <= limit:
                    values[pf_path] = min(pf, Decimal(1))
        total = values.get("/Ac/Power")
        if "/Ac/PowerFactor" not in values and complete and total is not None and apparent > 0:
            pf = abs(total) / apparent
            if pf <= limit:
                values["/Ac/PowerFactor"] = min(pf, Decimal(1))

    # --------------------------------------------------------------- queries
    def spec(self, path: str) -> Optional[PathSpec]:
        return self.paths.get(path)

    def measurement_paths(self, phases: Set[int]) -> List[str]:
        """The paths a meter with these phases gets on the bus (others stay absent)."""
        out = []
        for path in self.paths:
            if path in ("/Serial", "/FirmwareVersion"):
                continue
            ph = _phase_of(path)
            if ph is None or ph in phases:
                out.append(path)
        return out


__all__ = ["Mapper", "Mapped", "PathSpec", "Source", "load_table", "DEFAULT_FILE"]
