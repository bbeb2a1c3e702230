"""Meter readings -> Victron grid-meter paths, with Victron units and signs.

The table (which OBIS code feeds which path, each path's Victron unit, text format, signs) is
data: ``dlms_protocol/data/victron_mapping.json``, merged with an optional user file. Units are
converted by the core's one conversion (``dlms_protocol/units.py``, one factor per pair of units,
cached); a user file's ``units`` section only adds factors for units the core does not know. The
meter's serial (``/Serial``) comes from the core's one table of identity codes
(``obis.identity_rank``, obis_names.json ``meter_id_codes``). This module
applies it and derives what meters don't send and only Venus needs; the derivation is exact
(never an estimate). Net power (import - export, per phase and in total, positive = buying from
the grid) is not derived here: the pipeline's ``enrich`` adds it once for every output
(``dlms_protocol/derive.py``, marked ``derived``), and this table maps 16.7.0/36.7.0/... like
any register, so D-Bus shows the same net power as the items and the web chart, or none.

* signed per-phase currents: the meter's current (often unsigned) takes the sign of the phase's
  net power; without a known phase power the current is left out rather than published unsigned
  (an unsigned current during feed-in is a wrong value: victronenergy/venus#174);
* totals from complete phase sets (power, energy, current);
* per-phase power where the meter sends none, because systemcalc reads only ``/Ac/Lx/Power``
  (without it Venus shows no grid power and ESS has nothing to regulate on). The rules, in
  order (``phase_power_rules`` below; every phase power carries a label, see ``Mapped.labels``):

  1. the meter's own per-phase power (or the core's import - export per phase): **measured**/**derived**;
  2. totals plus per-phase import only: a phase whose import is above 0 has exactly that power
     (a phase cannot import and export at once); the phases with import 0 have together what is
     left of the net total (total import - total export - those imports, at most 0 within the
     meter's rounding; anything else means the values disagree and rule 4 applies): one such
     phase has it exactly, several have 0 when nothing is left (**derived**, currents signed);
     otherwise the rest is split among them by U*|I| as in rule 4 (**estimated**, only where
     rule 4's option estimates; else rule 4 decides for the whole frame);
  3. a single-phase meter, or a meter with no phase data at all: the total on L1
     (**total**, option ``total_power_on_l1``; Victron's own ABB B21 driver does the same);
  4. a 3-phase meter that sends only the total plus per-phase U/I: when only one phase
     carries current, that phase has the whole total (exact, **derived**); otherwise the
     option ``three_phase_total`` decides: ``estimate`` splits the total by U*|I| per phase
     (**estimated**: the sum is exact, which is what ESS "Total of all phases" regulates on,
     the split and the per-phase signs are guesses, so those currents stay unsigned = absent),
     ``l1`` puts the total on L1, ``off`` publishes no phase power. ``auto`` (default)
     estimates unless ESS is set to "Individual phase" regulation (localsettings
     ``/Settings/CGwacs/Hub4Mode`` = 2), where invented per-phase values would steer each
     phase's inverter: then no phase power is published and an error says why;
* power factor P/(U*I) where the meter sends none (never from an estimated or total-on-L1 power).

A reading without a unit where the path needs one, or with a unit that does not convert to the
path's unit, is skipped and logged once, never guessed: a ×1000 error in a counter is worse than
a missing value.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from functools import lru_cache
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from .. import DATA_DIR
from .. import units as _units
from ..errors import ConfigurationError
from ..model import LayoutMemo, MeterData, Reading, value_text
from ..obis import Obis, identity_rank
from ..ratelimit import Once

LOG = logging.getLogger(__name__)

DEFAULT_FILE = os.path.join(DATA_DIR, "victron_mapping.json")
PHASES = (1, 2, 3)
_PARTS = ("value",)
_TOTAL_ON_L1 = ("auto", "yes", "no")
_THREE_PHASE_TOTAL = ("auto", "estimate", "l1", "off")
_UNKNOWN: Any = object()  # a unit pair not looked up yet (None is "not convertible")
_ALIASES = {"true": "yes", "1": "yes", "on": "yes", "false": "no", "0": "no", "off": "no"}

#: labels of a phase power (``Mapped.labels``), in the log and the README
MEASURED, DERIVED, TOTAL, ESTIMATED = "measured", "derived", "total", "estimated"
#: localsettings' ESS multiphase regulation: 1 = total of all phases (phase compensation), 2 = individual phase
HUB4_INDIVIDUAL_PHASE = 2


#: where the phase rules' codes sit in a snapshot (``Mapper._phase_sources``): total import, total
#: export, each phase's import, each phase's export (None: not sent)
_PhaseAt = Tuple[Optional[int], Optional[int], Tuple[Optional[int], ...], Tuple[Optional[int], ...]]
_ONE = Decimal(1)
#: snapshot layouts whose source choice is kept (Mapper._plan); a meter has one or a few
_PLANS_MAX = 32
#: per-phase path names by phase number (index 0 unused), named once: every push is mapped
_POWER = ("",) + tuple(f"/Ac/L{ph}/Power" for ph in PHASES)
_CURRENT = ("",) + tuple(f"/Ac/L{ph}/Current" for ph in PHASES)
_VOLTAGE = ("",) + tuple(f"/Ac/L{ph}/Voltage" for ph in PHASES)
_POWER_FACTOR = ("",) + tuple(f"/Ac/L{ph}/PowerFactor" for ph in PHASES)
_ENERGY = {d: ("",) + tuple(f"/Ac/L{ph}/Energy/{d}" for ph in PHASES) for d in ("Forward", "Reverse")}
_PHASE_POWER = frozenset(_POWER[1:])
#: (power, voltage, power factor) path of each phase from L1 on
_PHASE_PATHS = tuple(zip(_POWER[1:], _VOLTAGE[1:], _POWER_FACTOR[1:]))
#: totals made from every phase's current: withheld at once when a phase current is (Mapper.map)
_FROM_CURRENTS = ("/Ac/Current", "/Ac/PowerFactor")


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


@dataclass(frozen=True, eq=False)  # identity hash: a dict key in every map() call
class Source:
    path: str
    patterns: Tuple[Obis, ...]
    part: str = "value"
    sign: int = 1
    sign_from: Optional[str] = None
    #: fed by the core's table of meter-identity codes (``"identity": true``) instead of ``patterns``
    identity: bool = False


#: a source of a number as ``Mapper._collect`` reads it (``Mapper._plan``): path, index of its reading, the
#: path's spec and unit, sign, sign source
_Step = Tuple[str, int, PathSpec, Optional[str], int, Optional[str]]
#: a layout's plan: its sources of numbers, then (path, index of the reading) of its sources of texts
_Plan = Tuple[Tuple[_Step, ...], Tuple[Tuple[str, int], ...]]


@dataclass
class Mapped:
    """One frame mapped to paths. ``values`` holds only what this frame delivered or derived."""

    values: Dict[str, Any] = field(default_factory=dict)
    phases: Set[int] = field(default_factory=set)  # phases this frame had data for
    total_on_l1: bool = False  # /Ac/L1/Power was filled from the total
    #: phase power path -> measured / derived / total / estimated (module docstring)
    labels: Dict[str, str] = field(default_factory=dict)
    #: paths this frame's values leave unknown on purpose (a current whose sign is not known, a
    #: power factor of an estimated phase power): invalid at once, not left at an older frame's value
    withheld: Set[str] = field(default_factory=set)

    @property
    def measures(self) -> bool:
        """Does the frame give Venus any measurement (a path under /Ac)? A frame of an unknown
        layout (values by position only) or with texts only gives none."""
        return any(path.startswith("/Ac/") for path in self.values)

    def estimated_phases(self) -> List[int]:
        """The phases whose power this frame estimated."""
        if ESTIMATED not in self.labels.values():  # (not a loop over the labels of every push)
            return []
        return [_phase_of(p) or 0 for p, lab in self.labels.items() if lab == ESTIMATED]

    def phase_note(self) -> Optional[str]:
        """What ``/Mgmt/Connection`` adds when a phase power is not the meter's (the GX shows it)."""
        estimated = self.estimated_phases()
        if estimated:
            return estimated_note(estimated)
        if self.labels.get("/Ac/L1/Power") == TOTAL and len(self.phases) > 1:
            return "total power on L1"
        return None


def estimated_note(phases: Iterable[int]) -> str:
    """``phase power L1, L3 estimated``: the note of ``Mapped.phase_note`` for these phases."""
    return "phase power L" + ", L".join(str(ph) for ph in sorted(phases)) + " estimated"


@dataclass(frozen=True)
class PhaseRules:
    """OBIS codes the phase-power rules read (``phase_rules`` in the mapping table)."""

    total_import: Obis
    total_export: Obis
    phase_import: Tuple[Obis, ...]
    phase_export: Tuple[Obis, ...]
    sum_tolerance: Decimal

    @classmethod
    def from_table(cls, raw: Dict[str, Any]) -> "PhaseRules":
        try:
            return cls(Obis.parse(str(raw["total_import"])), Obis.parse(str(raw["total_export"])),
                       tuple(Obis.parse(str(c)) for c in raw["phase_import"]),
                       tuple(Obis.parse(str(c)) for c in raw["phase_export"]),
                       Decimal(str(raw.get("sum_tolerance_w", 1.5))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"mapping: phase_rules is incomplete ({exc})",
                                     "see dlms_protocol/data/victron_mapping.json for the layout") from None


def _all_known(got: List[Optional[Decimal]]) -> bool:
    """No None among ``got``, told by identity: ``None in got`` compares each Decimal with None,
    and Decimal asks the numbers.Rational ABC about NoneType for that (abc's Python code and its
    caches, six times a push)."""
    for value in got:
        if value is None:
            return False
    return True


@lru_cache(maxsize=256)
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
        out["sources"] += [s for s in override["sources"]
                           if isinstance(s, dict) and (s.get("obis") or s.get("identity"))]
    return out


def load_table(user_file: Optional[str] = None) -> Dict[str, Any]:
    """The built-in table merged with a user's override file (same layout)."""
    with open(DEFAULT_FILE, encoding="utf-8") as f:
        table = json.load(f)
    if user_file:
        try:
            with open(user_file, encoding="utf-8") as f:
                override = json.load(f)
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


def _factor(where: str, value: Any) -> Decimal:
    """A conversion factor from the mapping JSON: a finite number, else ConfigurationError (never a
    decimal exception at run time)."""
    try:
        number = Decimal(str(value)) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    except ArithmeticError:  # decimal.InvalidOperation for 'abc'
        number = None
    if number is None or not number.is_finite():
        raise ConfigurationError(f"mapping: {where} = {value!r} is not a number",
                                 'write the factor as a number, e.g. "kW": 1000')
    return number


def _unit_tables(units: Any) -> Dict[str, Dict[str, Decimal]]:
    """A user file's extra factors (path unit -> reading unit -> factor), checked at start-up."""
    if not isinstance(units, dict) or not all(isinstance(t, dict) for t in units.values()):
        raise ConfigurationError("mapping: 'units' must map each unit to an object of factors",
                                 'write e.g. "units": {"W": {"W": 1, "kW": 1000}}')
    return {target: {src: _factor(f"units.{target}.{src}", f) for src, f in table.items()}
            for target, table in units.items()}


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
        #: a user file's extra factors; everything else converts through units.py
        self.units: Dict[str, Dict[str, Decimal]] = _unit_tables(table.get("units", {}))
        #: (path unit, reading unit) -> factor or None (not convertible): looked up once per pair
        self._factors: Dict[Tuple[Optional[str], Optional[str]], Optional[Decimal]] = {}
        self.paths: Dict[str, PathSpec] = {}
        for path, spec in table.get("paths", {}).items():
            if not isinstance(spec, dict):
                raise ConfigurationError(f"mapping: path {path} needs an object", 'write {"unit": "W"}')
            unit = spec.get("unit")
            if unit is not None and unit != "" and unit not in self.units and _units.parse_unit(unit) is None:
                raise ConfigurationError(f"mapping: path {path} has unit {unit!r}, which dlms_protocol/units.py "
                                         "cannot convert to",
                                         "use a unit such as W, kWh, V, A or Hz, or give its factors under 'units' "
                                         'in the mapping file, e.g. "units": {"' + str(unit) + '": {"' + str(unit)
                                         + '": 1}}')
            self.paths[path] = PathSpec(path, unit, spec.get("format"), bool(spec.get("counter", False)))
        #: instantaneous paths (their own staleness) and counters (never backwards), looked up per push
        self.instant_paths = frozenset(p for p, spec in self.paths.items() if not spec.counter)
        self.counter_paths = frozenset(p for p, spec in self.paths.items() if spec.counter)
        self.sources: List[Source] = []
        for raw in table.get("sources", []):
            self.sources.append(self._source(raw))
        media = self.options.get("media", [0, 1])
        self._media = set(media) if isinstance(media, list) else {0, 1}
        mode = str(self.options.get("total_power_on_l1", "auto")).lower()
        mode = _ALIASES.get(mode, mode)
        if mode not in _TOTAL_ON_L1:
            raise ConfigurationError(f"total_power_on_l1 = {mode!r} is unknown", "use auto, yes or no")
        self.total_on_l1 = mode
        split = str(self.options.get("three_phase_total", "auto")).lower()
        if split not in _THREE_PHASE_TOTAL:
            raise ConfigurationError(f"three_phase_total = {split!r} is unknown", "use auto, estimate, l1 or off")
        if mode == "yes" and split == "auto":
            split = "l1"  # the older option asked for the total on L1 explicitly
        self.three_phase_total = split
        self.rules = PhaseRules.from_table(table.get("phase_rules", {}))
        #: ESS multiphase regulation from localsettings (set by the D-Bus service); None = unknown
        self.hub4_mode: Optional[int] = None
        self._labels_logged: Tuple[Tuple[str, str], ...] = ()
        self._labels_seen = Once(64)  # the label combinations logged at INFO so far
        if self.options.get("missing_part_is_zero"):
            raise ConfigurationError("mapping option missing_part_is_zero is not supported: a missing import or "
                                     "export is never taken as 0 (that would publish a wrong net power)",
                                     "remove the option; a meter that sends both parts gets its net power")
        self.pf_tolerance = _factor("options.power_factor_tolerance", self.options.get("power_factor_tolerance", 0.05))
        self._by_obis: Dict[Obis, List[Tuple[Source, int]]] = {}
        #: per snapshot layout the readings each source takes (``_plan``)
        self._plans = LayoutMemo(_PLANS_MAX)
        #: per snapshot layout where the phase rules' codes sit (``_phase_sources``)
        self._phase_at = LayoutMemo(_PLANS_MAX)
        self._told = Once()
        self._three_phase = False  # phase memory, see the class docstring

    def _source(self, raw: Dict[str, Any]) -> Source:
        path = raw.get("path")
        if path not in self.paths:
            raise ConfigurationError(f"mapping: source for unknown path {path!r}",
                                     "add the path under 'paths' with its unit")
        if raw.get("identity") and not raw.get("obis"):  # the core's one table of meter-identity codes
            return Source(path, (), identity=True)
        codes = raw.get("obis")
        if isinstance(codes, str):
            codes = [codes]
        if not isinstance(codes, list) or not codes:
            raise ConfigurationError(f"mapping: source for {path} has no 'obis' list", 'write "obis": ["1.8.0"]')
        part = raw.get("part", "value")
        if part not in _PARTS:
            raise ConfigurationError(
                f"mapping: part {part!r} of {path} is not supported: net power is derived once in the core "
                "(import - export, only when both are sent)",
                "map the net code instead (16.7.0 total, 36.7.0/56.7.0/76.7.0 per phase) and drop 'part'")
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
        if self._told.first(key):
            LOG.warning(msg, *args)

    def _matches(self, code: Obis) -> List[Tuple[Source, int]]:
        found = self._by_obis.get(code)
        if found is None:
            found = []
            if code.a is None or code.a in self._media:
                for src in self.sources:
                    if src.identity:
                        rank = identity_rank(code)
                        if rank is not None:
                            found.append((src, rank))
                        continue
                    for rank, pattern in enumerate(src.patterns):
                        if pattern.matches(code):
                            found.append((src, rank))
                            break
            if len(self._by_obis) < 4096:
                self._by_obis[code] = found
        return found

    def _convert(self, reading: Reading, spec: PathSpec) -> Optional[Decimal]:
        num = reading.value
        if isinstance(num, Decimal) and self._factors.get((spec.unit, reading.unit)) is _ONE and num.is_finite():
            return num  # a number in the path's unit: the usual case of every push, without the checks below
        num = reading.numeric()
        if num is None and reading.value is None:
            if not reading.held:  # (a held-back counter: the decoder logs why)
                self._warn_once((spec.path, "unscaled"), "victron: %s (%s) arrives without a known scaler (raw %r); "
                                "%s stays empty - a meter profile must give it (see the dump command)",
                                reading.code, reading.name or "", reading.raw, spec.path)
            return None
        if num is None:
            self._warn_once((spec.path, "type"), "victron: %s (%s) is not a number (%r); %s stays empty",
                            reading.code, reading.name or "", reading.value, spec.path)
            return None
        if not num.is_finite():
            return None
        key = (spec.unit, reading.unit)
        factor = self._factors.get(key, _UNKNOWN)
        if factor is _UNKNOWN:
            factor = self._factor_of(key)
        if factor is None:
            unit = (reading.unit or "").strip()
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
        return num if factor is _ONE else num * factor  # x * 1 is x: the same float on the bus

    def _factor_of(self, key: Tuple[Optional[str], Optional[str]]) -> Optional[Decimal]:
        """The factor from a reading's unit to a path's unit, once per pair: the user file's extra
        factors first, then the core's one conversion (units.factor); None: not convertible."""
        target, unit = key[0] or "", (key[1] or "").strip()
        table = self.units.get(target, {})
        factor = table.get(unit)
        if factor is None and unit and unit.isupper():  # 'KWH' of old meters, when it names one unit
            hits = [f for u, f in table.items() if u.upper() == unit]
            factor = hits[0] if len(hits) == 1 else None
        if factor is None and unit == target == "":
            factor = Decimal(1)  # a plain number (power factor) into a path without a unit
        if factor is None and unit and target:
            try:
                factor = _units.factor(unit, target)
            except _units.UnitMismatch:
                factor = None
        if factor is not None and factor == 1:
            factor = _ONE  # (marks a unit that needs no conversion)
        if len(self._factors) < 256:  # a meter has a handful of units; never grow without bound
            self._factors[key] = factor
        return factor

    @staticmethod
    def _text(reading: Reading) -> Optional[str]:
        return value_text(reading.value)  # the core's one rule (MQTT's device serial uses it too)

    # -------------------------------------------------------------------- map
    def map(self, data: MeterData) -> Mapped:
        """Map one verified snapshot; absent paths are simply not in the result."""
        values, texts, sign_from, derived, held = self._collect(data)
        out = Mapped()
        for path in _PHASE_POWER.intersection(values):  # (the few phase powers, not a test per path)
            out.labels[path] = DERIVED if path in derived else MEASURED
        # the phases of the paths: _phase_of is cached, and set/map make no Python frame per path
        phases: Set[int] = set(map(_phase_of, (*values, *texts)))  # type: ignore[arg-type]
        phases.discard(None)  # type: ignore[arg-type]
        self._phase_power(data, values, phases, out)
        self._derive(values, phases, held)
        # a multi-phase meter's total on L1 or an estimated split is not that phase's measured power:
        # no current sign or power factor from it
        multi = max(phases, default=0) > 1
        labels = out.labels.values()  # (the usual push has measured or derived ones only: no loop over them)
        guessed = {p for p, lab in out.labels.items() if lab == ESTIMATED or (lab == TOTAL and multi)} \
            if ESTIMATED in labels or TOTAL in labels else set()

        # signed currents: |I| with the sign of the phase's net power
        for path, power_path in sign_from.items():
            if path not in values:
                continue
            power = values.get(power_path) if power_path not in guessed else None
            if power is None:
                del values[path]
                out.withheld.add(path)
                self._warn_once((path, "sign"), "victron: %s has no sign source (%s is %s), so it "
                                "is left out rather than published without a sign", path, power_path,
                                "estimated" if power_path in guessed else "unknown")
                continue
            mag = abs(values[path])
            values[path] = -mag if power < 0 else mag
        self._derive_after_currents(values, phases, guessed)
        if not out.withheld.isdisjoint(_CURRENT):  # a phase current without sign: no total from the phases now
            out.withheld.update(p for p in _FROM_CURRENTS if p not in values)
        for power_path in guessed:  # its power factor would rest on a guessed power
            pf_path = _POWER_FACTOR[_phase_of(power_path) or 0]
            if pf_path and pf_path not in values:
                out.withheld.add(pf_path)

        # floats for the bus, in the values' order, by C-level calls (no Python loop per path); a
        # number too large for a float (inf) is left out
        floats: Dict[str, Any] = dict(zip(values, map(float, values.values())))
        if not all(map(math.isfinite, floats.values())):
            floats = {path: f for path, f in floats.items() if math.isfinite(f)}
        out.values = floats
        floats.update(texts)
        out.phases = phases
        self._log_labels(out.labels)
        return out

    def _plan(self, readings: Tuple[Reading, ...]) -> "_Plan":
        """Per source of a number, in the order the sources were first matched: its path, the
        index of the reading it takes, the path's spec and unit, the source's sign and sign source;
        then (path, index) per source of a text.

        Which reading feeds which source depends only on the codes and their order, and a push
        meter sends the same layout every time, with the same code objects: so the choice is made
        once per layout (``model.LayoutMemo``), with what ``_collect`` reads of it at hand.
        """
        return self._plans.get(readings, self._find_plan)  # type: ignore[no-any-return]

    def _find_plan(self, codes: Tuple[Optional[Obis], ...]) -> "_Plan":
        paths = self.paths
        picks = self._find_picks(codes)
        return (tuple((src.path, i, paths[src.path], paths[src.path].unit, src.sign, src.sign_from)
                      for src, i in picks if paths[src.path].unit is not None),
                tuple((src.path, i) for src, i in picks if paths[src.path].unit is None))

    def _find_picks(self, codes: Tuple[Optional[Obis], ...]) -> Tuple[Tuple[Source, int], ...]:
        best: Dict[Source, Tuple[int, int]] = {}
        for i, code in enumerate(codes):
            if code is None:
                continue
            for src, rank in self._matches(code):
                seen = best.get(src)
                if seen is None or rank < seen[0]:
                    best[src] = (rank, i)
        return tuple((src, i) for src, (_rank, i) in best.items())

    def _collect(self, data: MeterData) -> Tuple[Dict[str, Decimal], Dict[str, str], Dict[str, str], Set[str],
                                                 Set[str]]:
        """The best reading per source, converted: (values per path, texts, sign sources, derived
        paths, paths whose reading is held back: nothing is derived for them from other readings,
        so the bus keeps their last value)."""
        readings = data.readings
        values: Dict[str, Decimal] = {}
        texts: Dict[str, str] = {}
        sign_from: Dict[str, str] = {}
        derived: Set[str] = set()
        held: Set[str] = set()
        factors = self._factors
        numbers, words = self._plan(readings)
        for path, i, spec, unit, sign, source in numbers:
            reading = readings[i]
            value = reading.value
            # a number in the path's unit, the usual case of every push: _convert's first test, inline
            if not (isinstance(value, Decimal) and factors.get((unit, reading.unit)) is _ONE and value.is_finite()):
                value = self._convert(reading, spec)
                if value is None:
                    if reading.held:
                        held.add(path)
                    continue
            values[path] = value if sign == 1 else value * sign  # (the same number either way)
            if reading.derived:
                derived.add(path)
            if source:
                sign_from[path] = source
        for path, i in words:  # (texts only: no log line here, so after the numbers is the same)
            text = self._text(readings[i])
            if text is not None:
                texts[path] = text
        return values, texts, sign_from, derived, held

    # ------------------------------------------------------------ phase power
    def set_ess_mode(self, hub4_mode: Optional[int]) -> None:
        """localsettings' /Settings/CGwacs/Hub4Mode (the D-Bus service reads and follows it)."""
        if hub4_mode != self.hub4_mode:
            LOG.info("victron: ESS multiphase regulation is %s (Hub4Mode %s)",
                     {1: "total of all phases", 2: "individual phase", 3: "external control"}.get(
                         hub4_mode or 0, "unknown"), hub4_mode)
        self.hub4_mode = hub4_mode

    def _power_w(self, readings: Tuple[Reading, ...], at: Optional[int]) -> Optional[Decimal]:
        return self._convert(readings[at], self.paths["/Ac/Power"]) if at is not None else None

    def _phase_sources(self, codes: Tuple[Optional[Obis], ...]) -> _PhaseAt:
        """Where the phase rules' codes sit: the first current (F 255) reading of an electricity
        medium with that C.D.E (the rules' codes have no A-B). It follows from the codes alone, so
        it is worked out once per layout (``model.LayoutMemo``), not on every push."""
        first: Dict[Tuple[int, Optional[int], Optional[int]], int] = {}
        for i, code in enumerate(codes):
            if code is not None and (code.a is None or code.a in self._media) and code.f in (None, 255):
                first.setdefault((code.c, code.d, code.e), i)

        def at(pattern: Obis) -> Optional[int]:
            return first.get((pattern.c, pattern.d, pattern.e))

        rules = self.rules
        return (at(rules.total_import), at(rules.total_export), tuple(map(at, rules.phase_import)),
                tuple(map(at, rules.phase_export)))

    def _phase_power(self, data: MeterData, values: Dict[str, Decimal], phases: Set[int], out: Mapped) -> None:
        """Rules 2-4 of the module docstring, for a frame with total power but no phase power."""
        # (set operations, not a generator per check: this runs for every push)
        multi = max(phases, default=0) > 1
        phase_power = not _PHASE_POWER.isdisjoint(values)
        if multi or phase_power:
            self._three_phase = True
        if "/Ac/Power" not in values or phase_power:
            return
        if self._import_only_phases(data, values, phases, out):
            return  # (phases changed only then)
        if not (multi or self._three_phase):
            if self.total_on_l1 != "no":
                values["/Ac/L1/Power"] = values["/Ac/Power"]
                out.labels["/Ac/L1/Power"] = TOTAL
                out.total_on_l1 = True
                phases.add(1)
            return
        self._three_phase_total(values, phases, out)

    def _import_only_phases(self, data: MeterData, values: Dict[str, Decimal], phases: Set[int],
                            out: Mapped) -> bool:
        """Rule 2, totals plus per-phase import only. A phase whose import is above 0 imports
        exactly that; the phases at 0 import nothing, so together they have what is left of the net
        total (total import - total export - the importing phases, at most 0): one such phase has
        it exactly, several have 0 when nothing is left, else share it by U*|I| (estimated)."""
        got = self._phase_imports(data, phases)
        if got is None:
            return False
        net, imports = got
        rest = net - sum((v for v in imports if v > 0), Decimal(0))
        idle = [ph for ph, v in enumerate(imports, start=1) if v == 0]
        tolerance = self.rules.sum_tolerance
        if rest > tolerance or (not idle and abs(rest) > tolerance):
            return False  # the values disagree (not one instant, not this meter's totals): no split
        share = self._share(values, idle, min(rest, Decimal(0)))
        if share is None:
            return False
        for ph, v in enumerate(imports, start=1):
            value, label = (v, DERIVED) if v > 0 else share[ph]
            values[_POWER[ph]] = value
            out.labels[_POWER[ph]] = label
            phases.add(ph)
        return True

    def _phase_imports(self, data: MeterData, phases: Set[int]) -> Optional[Tuple[Decimal, List[Decimal]]]:
        """(total import - total export, the import of each phase from L1 on) of a frame with
        per-phase import but no per-phase export; None for any other frame."""
        readings = data.readings
        total_at, export_at, import_at, phase_export_at = self._phase_at.get(readings, self._phase_sources)
        total, export = self._power_w(readings, total_at), self._power_w(readings, export_at)
        if total is None or export is None or total < 0 or export < 0:
            return None
        imports = [self._power_w(readings, at) for at in import_at]
        n = 0
        while n < len(imports) and imports[n] is not None:
            n += 1
        if n == 0 or any(v is not None for v in imports[n:]) or (phases and max(phases) > n):
            return None  # no imports, a gap, or phases the imports do not cover
        if any(self._power_w(readings, at) is not None for at in phase_export_at[:n]):
            return None  # per-phase export sent: import - export is exact already (or a part is missing)
        got: List[Decimal] = imports[:n]  # type: ignore[assignment]
        if any(v < 0 for v in got):
            return None
        return total - export, got

    def _share(self, values: Dict[str, Decimal], idle: List[int], rest: Decimal
               ) -> Optional[Dict[int, Tuple[Decimal, str]]]:
        """The powers of the phases without import that together have ``rest`` (<= 0), labelled;
        None when they cannot be told apart and estimating is not wanted (rule 4 decides then)."""
        if rest >= -self.rules.sum_tolerance:
            return {ph: (Decimal(0), DERIVED) for ph in idle}  # (nothing left, within the rounding)
        if len(idle) == 1:
            return {idle[0]: (rest, DERIVED)}
        weights = self._weights(values, idle)
        if weights is None or sum(weights, Decimal(0)) <= 0:
            return None
        live = [ph for ph, w in zip(idle, weights) if w]
        if len(live) == 1:  # only one of them carries current: it carries the rest
            return {ph: (rest if ph in live else Decimal(0), DERIVED) for ph in idle}
        if self._split_mode() != "estimate":
            return None
        self._warn_individual()
        whole = sum(weights, Decimal(0))
        return {ph: (rest * w / whole, ESTIMATED) for ph, w in zip(idle, weights)}

    def _weights(self, values: Dict[str, Decimal], phs: List[int]) -> Optional[List[Decimal]]:
        """U*|I| of each phase of ``phs`` (|I| when a voltage is missing or 0); None without every current."""
        currents = [values.get(_CURRENT[ph]) for ph in phs]
        if any(i is None for i in currents):
            return None
        volts = [values.get(_VOLTAGE[ph]) for ph in phs]
        if all(u is not None and u > 0 for u in volts):
            return [u * abs(i) for u, i in zip(volts, currents)]  # type: ignore[operator,arg-type]
        return [abs(i) for i in currents]  # type: ignore[arg-type]

    def _split_mode(self) -> str:
        """``three_phase_total`` as it applies now: auto estimates unless ESS regulates each phase."""
        mode = self.three_phase_total
        if mode == "auto":
            mode = "estimate"
            if self.hub4_mode == HUB4_INDIVIDUAL_PHASE:
                mode = "off"
                self._error_once(("/Ac/L1/Power", "individual"),
                                 "victron: this 3-phase meter does not send the power of every phase (only its "
                                 "total, or per-phase import while phases export) and ESS is set to 'Individual "
                                 "phase' regulation, which needs each phase's real power: no phase power is "
                                 "published. Set ESS multiphase regulation to 'Total of all phases' (the sum "
                                 "is exact), or set three_phase_total = estimate or l1 to accept it")
        return mode

    def _three_phase_total(self, values: Dict[str, Decimal], phases: Set[int], out: Mapped) -> None:
        """Rule 4: a 3-phase meter that sends only the total power."""
        total = values["/Ac/Power"]
        n = max(phases) if phases else 0
        currents = [values.get(_CURRENT[ph]) for ph in range(1, n + 1)]
        known = n > 1 and all(i is not None for i in currents)
        if known:
            live = [ph for ph, i in enumerate(currents, start=1) if i]
            if len(live) == 1 or (not live and total == 0):
                for ph in range(1, n + 1):  # only one phase carries current: it carries the total
                    values[_POWER[ph]] = total if ph in live else Decimal(0)
                    out.labels[_POWER[ph]] = DERIVED
                return
        mode = self._split_mode()
        if mode == "l1":
            values["/Ac/L1/Power"] = total
            out.labels["/Ac/L1/Power"] = TOTAL
            out.total_on_l1 = True
            phases.add(1)
        elif mode == "estimate":
            self._estimate(values, n if known else 0, out)
        elif mode == "off" and self.three_phase_total == "off":
            self._warn_once(("/Ac/L1/Power", "3ph"),
                            "victron: this 3-phase meter sends total power only and three_phase_total = off: "
                            "Venus (systemcalc) reads per-phase power only, so it shows no grid power")

    def _estimate(self, values: Dict[str, Decimal], n: int, out: Mapped) -> None:
        total = values["/Ac/Power"]
        weights = self._weights(values, list(range(1, n + 1))) if n else None
        if weights is None:
            self._warn_once(("/Ac/L1/Power", "noweights"),
                            "victron: this 3-phase meter sends total power but this list has no current of "
                            "every phase, so the total cannot be split; no phase power from it")
            return
        whole = sum(weights, Decimal(0))
        if whole <= 0:
            return
        for ph, w in enumerate(weights, start=1):
            values[_POWER[ph]] = total * w / whole
            out.labels[_POWER[ph]] = ESTIMATED
        self._warn_individual()

    def _warn_individual(self) -> None:
        if self.hub4_mode == HUB4_INDIVIDUAL_PHASE:
            self._warn_once(("/Ac/L1/Power", "est-individual"),
                            "victron: three_phase_total = estimate while ESS regulates each phase individually: "
                            "the per-phase values are estimates, only their sum is measured")

    def labels_now(self) -> Dict[str, str]:
        """The phase-power labels of the last mapped frame."""
        return dict(self._labels_logged)

    def _error_once(self, key: Tuple[str, str], msg: str, *args: Any) -> None:
        if self._told.first(key):
            LOG.error(msg, *args)

    def _log_labels(self, labels: Dict[str, str]) -> None:
        """Say in the log which phase powers are measured, derived or estimated: at INFO the first
        time each combination occurs, later changes at DEBUG. A meter that sends per-phase import
        only switches between derived and estimated whenever one phase's PV export crosses zero,
        which can be every few seconds; /Mgmt/Connection names the phases estimated within the
        last minute (``bridge.NOTE_HOLD``)."""
        now = tuple(sorted(labels.items()))
        if not now or now == self._labels_logged:
            return
        self._labels_logged = now
        first = self._labels_seen.first(now)
        if not first and not LOG.isEnabledFor(logging.DEBUG):
            return
        text = ", ".join(f"L{_phase_of(p)} {lab}" for p, lab in now)
        notes = {
            MEASURED: "sent by the meter",
            DERIVED: "exact from the meter's values",
            TOTAL: "the meter's total power published on L1",
            ESTIMATED: "the measured total, or what the exact phases leave of it, split by U*|I| per phase "
                       "(sum exact, split estimated, and the signs too unless per-phase import shows them; "
                       "option three_phase_total)",
        }
        used = sorted({lab for _p, lab in now})
        LOG.log(logging.INFO if first else logging.DEBUG, "victron: phase power %s (%s)", text,
                "; ".join(f"{lab}: {notes[lab]}" for lab in used))

    def _derive(self, values: Dict[str, Decimal], phases: Set[int], held: Set[str]) -> None:
        """Totals from the phases where the meter sends none (not where it sends one that is held
        back: a sum of the phases' import is another quantity than a balanced total)."""
        top = max(phases) if phases else 0

        def per_phase(names: Tuple[str, ...]) -> Optional[List[Decimal]]:
            got = list(map(values.get, names[1:top + 1]))  # (the phases 1..top, C-level)
            if not top or not _all_known(got):
                return None
            return got  # type: ignore[return-value]

        if "/Ac/Power" not in values:
            got = per_phase(_POWER)
            if got is not None:
                values["/Ac/Power"] = sum(got, Decimal(0))
        for direction in ("Forward", "Reverse"):
            total = f"/Ac/Energy/{direction}"
            if total in held:
                continue
            if total not in values:
                got = per_phase(_ENERGY[direction])
                if got is not None:
                    values[total] = sum(got, Decimal(0))
            elif phases == {1} and _ENERGY[direction][1] not in values:
                values[_ENERGY[direction][1]] = values[total]
        if phases and "/Ac/Voltage" not in values:
            got = per_phase(_VOLTAGE)
            if got is not None:
                values["/Ac/Voltage"] = sum(got, Decimal(0)) / len(got)

    def _derive_after_currents(self, values: Dict[str, Decimal], phases: Set[int], guessed: Set[str]) -> None:
        top = max(phases) if phases else 0
        currents = list(map(values.get, _CURRENT[1:top + 1]))  # (C-level: no Python loop per phase)
        if top and "/Ac/Current" not in values and _all_known(currents):
            values["/Ac/Current"] = sum(currents, Decimal(0))  # type: ignore[arg-type]
        apparent = Decimal(0)
        complete = bool(top)
        limit = 1 + self.pf_tolerance
        # (each phase's paths from one tuple: no index into four path tables per phase)
        for (power_path, volt_path, pf_path), i in zip(_PHASE_PATHS[:top], currents):
            u = values.get(volt_path)
            if u is None or i is None:
                complete = False
                continue
            s = u * abs(i)
            apparent += s
            if pf_path not in values:
                p = values.get(power_path) if power_path not in guessed else None
                if p is not None and s > 0:
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


__all__ = ["Mapper", "Mapped", "PathSpec", "PhaseRules", "Source", "load_table", "DEFAULT_FILE", "MEASURED", "DERIVED",
           "TOTAL", "ESTIMATED"]
