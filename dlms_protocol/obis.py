"""OBIS codes (IEC 62056-61): parse every form meters transmit, format, match, and name them.

Meters write the same register many ways. All of these parse::

    1-0:1.8.0*255   1-0:1.8.0.255   1-0:1.8.0   1.8.0   1.8   1.8.0*01   6.26*01
    C.1.0   F.F   0.9.1   C   F   L   P   P.01   1-0:21.7.255*255   0-0:C.1.0*255

Letters in value groups C and D are the abstract codes of IEC 62056-61: ``C`` = 96
(general service), ``F`` = 97 (error), ``L`` = 98 (list), ``P`` = 99 (profile). So ``F.F``
is ``97.97`` and ``C.1.0`` is ``96.1.0``; both spellings compare equal.

Normalisation
-------------
``Obis.normalized()`` gives ``A-B:C.D.E*F`` only when the meter sent groups A to E; a
missing F becomes 255 ("current value, no billing period"), which is what F=255 means.
Short codes (``1.8.0``) stay un-normalised (``None``): whether ``1.8.0`` belongs to medium
1 (electricity) or, on a heat meter, medium 6 is not in the code, and guessing would be
writing a wrong value. A D0 readout fills in A only where the meter's identification names the
medium (``d0_medium``, ``with_medium``: a heat meter's ``6.8``); B stays unknown, so such a code
stays un-normalised as well. Names follow A: a medium other than electricity (2-15) gets no
name from the electricity C and D tables, only from entries for its A.

Matching a user's code against what a meter sends
-------------------------------------------------
``Obis.parse(user).matches(Obis.parse(sent))``: the groups the user wrote must be equal.

* A and B left out by the user match anything: ``1.8.1`` matches ``1-0:1.8.1*255``,
  ``1-1:1.8.1`` and ``1.8.1``.
* F left out by the user matches a missing F or F = 255 (the current value), never a
  billing period: ``1.8.0`` does not match ``1.8.0*01``; write ``1.8.0*01`` for that.
* E (and D) left out by the user match only codes where the meter left them out too:
  ``1.8`` matches ``1.8`` but not ``1.8.0``.
* ``1-0:1.8.0*255``, ``1-0:1.8.0.255`` and ``1-0:1.8.0`` are the same code.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, FrozenSet, Iterable, Optional, Set, Tuple

from .errors import ConfigurationError
from .units import same_quantity

LETTERS: Dict[str, int] = {"C": 96, "F": 97, "L": 98, "P": 99}
#: the highest value group A that names a medium (0 abstract, 1 electricity ... 9 hot water, up to
#: 15); above it a code is its maker's own, and the standard's C.D.E names do not apply
_MEDIA_MAX = 15
#: value group C of the quantities of a medium (C 0 and 93-99 are abstract: general purpose,
#: service, error, lists, profiles, the same for every medium)
_QUANTITY_C = range(1, 93)
_LETTER_OF = {v: k for k, v in LETTERS.items()}

_GROUP = r"(?:\d{1,3}|[CFLP])"
_RE = re.compile(
    r"^\s*(?:(?P<a>\d{1,3})-(?P<b>\d{1,3}):)?"
    rf"(?P<c>{_GROUP})"
    rf"(?:\.(?P<d>{_GROUP})"
    r"(?:\.(?P<e>\d{1,3})(?:\.(?P<fdot>\d{1,3}))?)?)?"
    r"(?:\*(?P<f>\d{1,3}))?\s*$"
)


def _group(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    value = LETTERS.get(text)
    if value is None:
        value = int(text)
    if value > 255:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class Obis:
    """One OBIS code; ``None`` in a group means the meter (or user) left it out."""

    a: Optional[int]
    b: Optional[int]
    c: int
    d: Optional[int] = None
    e: Optional[int] = None
    f: Optional[int] = None

    def __hash__(self) -> int:
        """The fields' hash, computed once: codes are dict keys and cache keys for every reading of
        every push (the generated dataclass hash was a measurable part of decoding)."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.a, self.b, self.c, self.d, self.e, self.f))
            object.__setattr__(self, "_hash", h)
        return h

    # ----------------------------------------------------------------- construction
    @classmethod
    def parse(cls, text: str) -> "Obis":
        """Parse any of the forms listed in the module docstring; raise ConfigurationError."""
        code = cls.try_parse(text)
        if code is None:
            raise ConfigurationError(
                f"{text!r} is not an OBIS code",
                "write it like 1.8.0, 1-0:1.8.0, 1-0:1.8.0*255 or 1-0:1.8.0.255",
            )
        return code

    @classmethod
    def try_parse(cls, text: str) -> Optional["Obis"]:
        """Like parse(), but None for anything that is not an OBIS code (meter noise, vendor codes)."""
        if not isinstance(text, str):
            return None
        m = _RE.match(text)
        if m is None:
            return None
        g = m.groupdict()
        try:
            return cls(_group(g["a"]), _group(g["b"]), _group(g["c"]),  # type: ignore[arg-type]
                       _group(g["d"]), _group(g["e"]), _group(g["f"] or g["fdot"]))
        except ValueError:
            return None

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Obis":
        """The 6-byte octet-string form used in COSEM (``01 00 01 08 00 FF``)."""
        if len(raw) != 6:
            raise ValueError(f"an OBIS octet string has 6 bytes, not {len(raw)}")
        return cls(*raw)

    # ------------------------------------------------------------------- properties
    @property
    def is_full(self) -> bool:
        """True when A to E are all known, so the code can be normalised."""
        return None not in (self.a, self.b, self.d, self.e)

    @property
    def groups(self) -> Tuple[Optional[int], ...]:
        return (self.a, self.b, self.c, self.d, self.e, self.f)

    # ----------------------------------------------------------------- formatting
    def normalized(self) -> Optional[str]:
        """``A-B:C.D.E*F`` with F defaulting to 255, or None for short codes (see module doc)."""
        if not self.is_full:
            return None
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}*{255 if self.f is None else self.f}"

    def dotted(self) -> Optional[str]:
        """``A-B:C.D.E.F``, the form the DLMS push side and Gurux use; None for short codes.
        Cached: every reading of every push asks for it."""
        return _dotted(self.a, self.b, self.c, self.d, self.e, self.f)

    def short(self, letters: bool = False) -> str:
        """``C.D.E`` (plus ``*F`` for billing periods): the form users usually write."""
        parts = [self._fmt(self.c, letters)]
        if self.d is not None:
            parts.append(self._fmt(self.d, letters))
        if self.e is not None:
            parts.append(str(self.e))
        text = ".".join(parts)
        if self.f is not None and self.f != 255:
            text += f"*{self.f:02d}"
        return text

    def __str__(self) -> str:
        full = self.normalized()
        if full is not None:
            return full
        prefix = f"{self.a}-{self.b}:" if self.a is not None and self.b is not None else ""
        text = prefix + ".".join(self._fmt(g, False) for g in (self.c, self.d, self.e) if g is not None)
        if self.f is not None:
            text += f"*{self.f:02d}"
        return text

    @staticmethod
    def _fmt(group: int, letters: bool) -> str:
        if letters and group in _LETTER_OF:
            return _LETTER_OF[group]
        return str(group)

    # ------------------------------------------------------------------- matching
    def matches(self, sent: "Obis") -> bool:
        """Does this (user-written) code select the code a meter sent? Rules in the module doc."""
        if self.a is not None and self.a != sent.a:
            return False
        if self.b is not None and self.b != sent.b:
            return False
        if (self.c, self.d, self.e) != (sent.c, sent.d, sent.e):
            return False
        if self.f is None or self.f == 255:
            return sent.f is None or sent.f == 255
        return self.f == sent.f

    # ------------------------------------------------------------------ knowledge
    def name(self, language: str = "en", unit: Optional[str] = None) -> Optional[str]:
        """Human name from data/obis_names.json (composed from group C and D tables). With the
        reading's ``unit``: None when that unit is another quantity than the name's (a heat
        meter's short code ``6.8`` in GJ or MWh is no reactive energy; the code alone does not
        say the medium, the unit does)."""
        name, usual = describe(self, language)
        if name is not None and unit and usual and same_quantity(unit, usual) is False:
            return None
        return name

    def other_medium(self) -> bool:
        """A medium other than electricity (A 2-15: heat, gas, water ...), whose quantities the
        electricity tables (names, Home Assistant classes) do not describe."""
        return self.a is not None and 1 < self.a <= _MEDIA_MAX

    def unit(self) -> Optional[str]:
        """The usual unit of this quantity (used only when a frame carries none)."""
        return describe(self)[1]

    def glued_units(self) -> Tuple[str, ...]:
        """Units whose quantity a unit glued to this code's number may be of: its usual unit, or
        for a code without one those of obis_names.json ``glued_units`` (the limiter threshold)."""
        usual = self.unit()
        if usual:
            return (usual,)
        if self.a not in (None, 0):
            return ()
        return _glued_unit_table().get(f"{self.c}.{self.d}.{self.e}", ())

    def is_text(self) -> bool:
        """Is this code's value text even when all digits (obis_names.json ``text_codes``):
        identifiers, times, dates? A number would drop the leading zeros of a serial number."""
        codes = _text_codes()
        return (self.c, self.d) in codes or (self.c, self.d, self.e) in codes

    def is_serial(self) -> bool:
        """Does this code carry the meter's own serial number/identification (obis_names.json
        ``meter_id_codes``)? One table for MeterData.meter_id, Victron's /Serial, MQTT device serials."""
        return identity_rank(self) is not None


@lru_cache(maxsize=4096)
def _dotted(a: Optional[int], b: Optional[int], c: Optional[int], d: Optional[int], e: Optional[int],
            f: Optional[int]) -> Optional[str]:
    if None in (a, b, d, e):
        return None
    return f"{a}-{b}:{c}.{d}.{e}.{255 if f is None else f}"


@lru_cache(maxsize=1)
def _text_codes() -> FrozenSet[Tuple[Optional[int], ...]]:
    """(C, D) and (C, D, E) of the codes of obis_names.json ``text_codes`` (``C.D``, ``C.D1-D2``,
    ``C.D.E``, ``C.D.E1-E2``)."""
    out: Set[Tuple[Optional[int], ...]] = set()
    for entry in _tables()["text_codes"]["codes"]:
        *fixed, span = entry.split(".")
        first, _, last = span.partition("-")
        for g in range(int(first), int(last or first) + 1):
            out.add((*(int(f) for f in fixed), g))
    return frozenset(out)


@lru_cache(maxsize=1)
def _glued_unit_table() -> Dict[str, Tuple[str, ...]]:
    return {code: tuple(units) for code, units in _tables()["glued_units"]["codes"].items()}


@lru_cache(maxsize=1)
def _identity_codes() -> Dict[Tuple[Optional[int], ...], Tuple[int, FrozenSet[Optional[int]]]]:
    """C.D.E -> (rank, the A groups it counts under), from obis_names.json ``meter_id_codes``."""
    entries = _tables()["meter_id_codes"]["codes"]
    return {tuple(int(g) for g in e["code"].split(".")): (rank, frozenset(e["a"])) for rank, e in enumerate(entries)}


def _e_left_out(code: Obis) -> bool:
    """A D0 short code that leaves out E (``0.0``, Kamstrup 382's meter number): read as E = 0."""
    return code.a is None and code.e is None and code.d is not None


@lru_cache(maxsize=1024)
def identity_rank(code: Optional[Obis]) -> Optional[int]:
    """Where ``code`` stands in the one table of meter-identity codes (0 = best), or None when it
    does not name this meter (rules in obis_names.json ``meter_id_codes``)."""
    if code is None:
        return None
    table = _identity_codes()
    entry = table.get((code.c, code.d, code.e))
    if entry is None and _e_left_out(code):  # D0's "0.0" (Kamstrup 382)
        entry = table.get((code.c, code.d, 0))
    if entry is None or code.a not in entry[1] or (code.a == 0 and code.b not in (None, 0)):
        return None
    return entry[0]


@lru_cache(maxsize=1)
def _manufacturer_codes() -> Dict[Tuple[int, ...], Tuple[FrozenSet[Optional[int]], Optional[FrozenSet[int]]]]:
    entries = _tables()["manufacturer_codes"]["codes"]
    return {tuple(int(g) for g in e["code"].split(".")):
            (frozenset(e["a"]), None if e["f"] is None else frozenset(e["f"])) for e in entries}


def is_manufacturer(code: Optional[Obis]) -> bool:
    """``code`` carries the meter's manufacturer (obis_names.json ``manufacturer_codes``)."""
    if code is None:
        return False
    entry = _manufacturer_codes().get((code.c, code.d, code.e))  # type: ignore[arg-type]
    return entry is not None and code.a in entry[0] and (entry[1] is None or (255 if code.f is None else code.f)
                                                          in entry[1])


def best_identity(candidates: Iterable[Tuple[Optional[Obis], Optional[str]]]) -> Optional[str]:
    """The text of the best-ranked identity code among ``(code, text)`` pairs (empty texts skipped;
    between equal ranks the first sent wins). Every caller that picks a meter id uses this."""
    best: Optional[Tuple[int, str]] = None
    for code, text in candidates:
        if not text:
            continue
        rank = identity_rank(code)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, text)
    return best[1] if best is not None else None


@lru_cache(maxsize=1)
def _d0_media() -> Tuple[Tuple[str, str, int], ...]:
    return tuple((e["manufacturer"].upper(), e["ident"], e["medium"]) for e in _tables()["d0_media"]["meters"])


def d0_medium(manufacturer: str, ident: str) -> Optional[int]:
    """The medium (group A) of a D0 meter's short codes when its identification says it (a heat
    meter's 6.8 is heat energy, not reactive energy; obis_names.json ``d0_media``), else None."""
    maker = manufacturer.upper()
    for name, start, medium in _d0_media():
        if maker == name and ident.startswith(start):
            return medium
    return None


_CDE = Tuple[int, int, int]


def _cde_of(text: str) -> _CDE:
    c, d, e = (int(g) for g in text.split("."))
    return c, d, e


@lru_cache(maxsize=1)
def _signed_net_table() -> Dict[str, Dict[_CDE, Tuple[_CDE, Dict[str, str]]]]:
    return {m["manufacturer"].upper(): {_cde_of(code): (_cde_of(e["net"]), {"en": e["en"], "de": e["de"]})
                                         for code, e in m["codes"].items()}
            for m in _tables()["signed_net_power"]["meters"]}


def signed_net(manufacturer: Optional[str], code: Optional[Obis]) -> Optional[Tuple[_CDE, Dict[str, str]]]:
    """(C.D.E of the net power, names by language) when ``manufacturer`` documents ``code`` as signed
    net power (obis_names.json ``signed_net_power``: EasyMeter's 1.7.255), else None: the standard
    reads that code as import only, which a meter of another make may well mean."""
    return _by_maker(_signed_net_table(), manufacturer, code)  # type: ignore[no-any-return]


def _by_maker(table: Dict[str, Dict[_CDE, Any]], manufacturer: Optional[str], code: Optional[Obis]) -> Any:
    """``table``'s entry for ``code`` of this maker (FLAG id) when it is an electricity code of the
    current value (A 1 or none, F 255 or none), else None."""
    if not manufacturer or code is None or code.a not in (None, 1) or code.f not in (None, 255):
        return None
    codes = table.get(manufacturer.upper())
    return codes.get((code.c, code.d, code.e)) if codes is not None else None  # type: ignore[arg-type]


@lru_cache(maxsize=1)
def signed_net_makers() -> Dict[_CDE, Tuple[str, ...]]:
    """The manufacturers documenting each code (C.D.E) as signed net power: a cheap first test."""
    out: Dict[_CDE, Tuple[str, ...]] = {}
    for maker, codes in _signed_net_table().items():
        for cde in codes:
            out[cde] = out.get(cde, ()) + (maker,)
    return out


@lru_cache(maxsize=1)
def _maker_names() -> Dict[str, Dict[_CDE, Dict[str, str]]]:
    return {m["manufacturer"].upper(): {_cde_of(code): names for code, names in m["codes"].items()}
            for m in _tables()["maker_names"]["meters"]}


def maker_name(manufacturer: Optional[str], code: Optional[Obis]) -> Optional[Dict[str, str]]:
    """The names by language of ``code`` where ``manufacturer`` uses it for another quantity than the
    standard's (obis_names.json ``maker_names``: the fuse threshold that Fluvius and E.ON Hungary
    meters send as 31.4.0, 'current average'), else None."""
    return _by_maker(_maker_names(), manufacturer, code)  # type: ignore[no-any-return]


def with_medium(code: Optional[Obis], medium: Optional[int]) -> Optional[Obis]:
    """``code`` with ``medium`` as its group A when the meter left A out and C is a quantity;
    abstract codes (0.0, F.F, C.1.0) belong to no medium and stay as they are."""
    if code is None or medium is None or code.a is not None or code.c not in _QUANTITY_C:
        return code
    return Obis(medium, code.b, code.c, code.d, code.e, code.f)


@lru_cache(maxsize=1)
def _tables() -> dict:
    path = os.path.join(os.path.dirname(__file__), "data", "obis_names.json")  # os.path: pathlib costs start-up
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=4096)
def describe(code: Obis, language: str = "en") -> Tuple[Optional[str], Optional[str]]:
    """Return (name, usual unit) for a code, or (None, None) when the tables don't know it.

    Specific entries (``"0.9.1"``, ``"96.1.0"``) win; otherwise the name is composed as
    "<quantity C> <processing D>" with the tariff E appended, the way IEC 62056-61 builds them.
    """
    t = _tables()
    lang = language if language in ("en", "de") else "en"
    cde = ".".join(str(g) for g in (code.c, code.d, code.e) if g is not None)
    keys = [f"{code.a}:{cde}"] if code.a is not None else []
    keys.append(cde)
    if code.e == 0:  # "96.1" names 96.1.0, not 96.1.1
        keys.append(f"{code.c}.{code.d}")
    elif _e_left_out(code):  # D0's "0.0" is 0.0.0
        keys.append(f"{code.c}.{code.d}.0")
    for key in keys:
        entry = t["specific"].get(key)
        if entry:
            return _with_period(entry[lang], code, lang), entry.get("unit")
        if code.a is not None and code.a > _MEDIA_MAX:
            return None, None  # (A 16-255, e.g. SML's 129: the manufacturer's own, only its A-keyed entries)
        if code.other_medium() and code.c in _QUANTITY_C:
            return None, None  # (heat, gas, water: the C and D tables are electricity's quantities)
    angle = _angle(code, lang)
    if angle is not None:
        return _with_period(angle, code, lang), t["angles"]["unit"]
    quantity = t["c"].get(str(code.c))
    processing = t["d"].get(str(code.d)) if code.d is not None else None
    if quantity is None or (code.d is not None and processing is None):
        return None, None
    name = quantity[lang]
    unit = None
    if processing is not None:
        name = f"{name}, {processing[lang]}"
        kind = processing.get("kind")
        unit = quantity.get(kind) if kind else None
    if code.e and code.e != 255:  # E=255: 'not used', no tariff
        name += f", {t['tariff'][lang]} {code.e}"
    return _with_period(name, code, lang), unit


def _angle(code: Obis, lang: str) -> Optional[str]:
    """The name of a phase angle (obis_names.json ``angles``: C 81, E the two quantities, no tariff)."""
    rule = _tables()["angles"]
    e = code.e
    if code.c != rule["c"] or code.d != rule["d"] or e is None or e in (0, 255) or code.a not in (None, 1):
        return None
    a, b = (rule["parts"].get(str(x)) for x in divmod(e, 10))
    return rule[lang].format(a=a, b=b) if a is not None and b is not None and a != b else None


def _with_period(name: str, code: Obis, lang: str) -> str:
    if code.f is not None and code.f != 255:
        return f"{name} ({_tables()['period'][lang]} {code.f})"
    return name


__all__ = ["Obis", "LETTERS", "describe", "identity_rank", "best_identity", "is_manufacturer", "d0_medium",
           "with_medium", "signed_net", "signed_net_makers", "maker_name"]
