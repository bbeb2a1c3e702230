"""Registers a meter does not send but that follow exactly from ones it does (net power).

Many meters send import and export power (1.7.0, 2.7.0) but not the signed net power
(16.7.0) that visualisations and logics want. The rules are data (``data/derived.json``); a
value is derived only when both parts arrived in the same verified snapshot with power units
we can convert, so a missing part never turns into an assumed 0. A meter whose maker documents
another code as signed net power (EasyMeter's 1.7.255, obis_names.json ``signed_net_power``; the
D0 parser marks such readings, ``model.SIGNED_NET_DETAIL``) gets the net code with that value.
"""
from __future__ import annotations

import json
import os
from decimal import Decimal
from functools import lru_cache
from typing import Dict, List, Optional, Set, Tuple

from . import DATA_DIR
from .model import LayoutMemo, MeterData, Reading, new_reading
from .obis import Obis, signed_net, signed_net_makers
from .units import parse_unit


@lru_cache(maxsize=1)
def rules() -> List[Tuple[Obis, Obis, Obis]]:
    """(derived code, plus part, minus part) for every rule in ``data/derived.json``."""
    with open(os.path.join(DATA_DIR, "derived.json"), encoding="utf-8") as f:
        table = json.load(f)
    rules = [(Obis.parse(r["obis"]), Obis.parse(r["plus"]), Obis.parse(r["minus"])) for r in table["rules"]]
    return rules


@lru_cache(maxsize=64)
def _in_watts(unit: Optional[str]) -> Optional[Decimal]:
    """The factor of a power unit to W (the one unit table, ``units.py``); None for anything else."""
    parsed = parse_unit(unit) if unit else None
    return parsed[1] if parsed is not None and parsed[0] == "W" else None


def derive(data: MeterData, wanted: Obis) -> Optional[Reading]:
    """A reading for ``wanted`` computed from others in ``data``, or None when no rule applies."""
    return _derive(data, wanted, False)


def _derive(data: MeterData, wanted: Obis, derived: bool) -> Optional[Reading]:
    table = rules()
    for code, plus_code, minus_code in table:
        if (wanted.c, wanted.d, wanted.e) != (code.c, code.d, code.e) or wanted.f not in (None, 255):
            continue
        plus, minus = data.get(_like(plus_code, wanted)), data.get(_like(minus_code, wanted))
        if plus is None or minus is None:
            break  # (the first rule for a code wins; the meter's own signed value may still give it)
        return _net(code, plus, minus, derived)
    return _derive_signed(data, wanted, derived)


def _derive_signed(data: MeterData, wanted: Obis, derived: bool) -> Optional[Reading]:
    """``wanted`` from a value its maker documents as signed net power (``_signed``), or None."""
    if wanted.f not in (None, 255):
        return None
    net = (wanted.c, wanted.d, wanted.e)
    for cde in signed_net_makers():
        for part in data.find(Obis(wanted.a, wanted.b, *cde, None)):
            entry = signed_net(part.signed_by(), part.obis)
            if entry is not None and entry[0] == net:
                code = _result_code(part.obis.a, part.obis.b, _net_code(entry[0]))  # type: ignore[union-attr]
                return _signed(_written_as(code, part), part, derived)
    return None


def _net_code(cde: Tuple[int, int, int]) -> Obis:
    return Obis(None, None, cde[0], cde[1], cde[2], None)


def _signed(result: Tuple[Obis, str], part: Reading, derived: bool) -> Optional[Reading]:
    """The signed value as a reading of ``result`` (its code and text): the same value and unit,
    only when it is a finite power (units.py), as a net power from import and export would be."""
    value = part.numeric()
    if value is None or not value.is_finite() or _in_watts(part.unit) is None:
        return None
    return new_reading(result[1], result[0], value, part.unit, None, None, -1, part.timestamp, (), derived)


def _net(code: Obis, plus: Reading, minus: Reading, derived: bool) -> Optional[Reading]:
    """plus - minus as a reading of ``code`` (A-B of ``plus``), or None when not exactly known."""
    a, b = (plus.obis.a, plus.obis.b) if plus.obis is not None else (None, None)
    return _difference(_written_as(_result_code(a, b, code), plus), plus, minus, derived)


def _written_as(result: Tuple[Obis, str], part: Reading) -> Tuple[Obis, str]:
    """The result with its text in the form of its part's: a DLMS push's ``1-0:16.7.0.255`` beside
    its ``1-0:1.7.0.255`` (the form gurux and the push side use), else ``1-0:16.7.0*255`` or a
    short ``16.7.0`` as ``str(Obis)`` writes them."""
    obis = part.obis
    if obis is None or part.code != obis.dotted():
        return result
    dotted = result[0].dotted()
    return result if dotted is None else (result[0], dotted)


def _difference(result: Tuple[Obis, str], plus: Reading, minus: Reading, derived: bool) -> Optional[Reading]:
    """plus - minus as a reading of ``result`` (its code and text), or None when not exactly known."""
    p, m = plus.numeric(), minus.numeric()
    fp, fm = _in_watts(plus.unit), _in_watts(minus.unit)
    if p is None or m is None or fp is None or fm is None or not (p.is_finite() and m.is_finite()):
        return None
    try:
        # in one unit the difference itself: the same Decimal (value and exponent) as the scaled
        # form below, without its multiplications and division (a push derives this every time)
        value = p - m if fp == fm else (p * fp - m * fm) / fp
    except ArithmeticError:  # a value no meter sends (overflow): nothing derived
        return None
    return new_reading(result[1], result[0], value, plus.unit, None, None, -1, plus.timestamp, (), derived)


@lru_cache(maxsize=256)
def _result_code(a: Optional[int], b: Optional[int], code: Obis) -> Tuple[Obis, str]:
    """The code of a result and its text, made once: the same objects every push, so the Victron
    mapping's per-layout plan recognises derived readings by identity like sent ones."""
    obis = Obis(a, b, code.c, code.d, code.e, None)
    return obis, str(obis)


_CDE = Tuple[int, Optional[int], Optional[int]]


@lru_cache(maxsize=1)
def _plan() -> List[Tuple[Obis, _CDE, _CDE, _CDE]]:
    """(code, its C.D.E, plus C.D.E, minus C.D.E) per derived code; the first rule for a code wins,
    as in ``derive``."""
    out: List[Tuple[Obis, _CDE, _CDE, _CDE]] = []
    for code, plus, minus in rules():
        cde = (code.c, code.d, code.e)
        if all(c != cde for _, c, _, _ in out):
            out.append((code, cde, (plus.c, plus.d, plus.e), (minus.c, minus.d, minus.e)))
    return out


def _first(codes: Tuple[Optional[Obis], ...], candidates: List[int], a: Optional[int], b: Optional[int]
           ) -> Optional[int]:
    """The first of the candidates (indices into ``codes``) a code with this A-B selects
    (``Obis.matches``: None selects any)."""
    for i in candidates:
        o = codes[i]
        if (a is None or o.a == a) and (b is None or o.b == b):  # type: ignore[union-attr]
            return i
    return None


def derive_all(data: MeterData) -> List[Reading]:
    """Every rule's result the meter did not send itself, each only when exactly known.

    The A-B of a result is that of its parts (``1-0:16.7.0`` from ``1-0:1.7.0``); a short D0
    code gives a short result. Results are marked ``derived``. The same results as asking
    ``derive`` for every A-B a plus part was sent with (tests/test_derive.py checks it): which
    readings pair up depends only on the codes and their order, so it is worked out once per
    layout (``_find_pairs``, ``model.LayoutMemo``) and every push only subtracts.
    """
    readings = data.readings
    out: List[Reading] = []
    pairs, signed = _PAIRS.get(readings, lambda codes: _find_pairs(codes, readings))
    for result, plus, minus in pairs:
        reading = _difference(result, readings[plus], readings[minus], True)
        if reading is not None:
            out.append(reading)
    for index, options in signed:  # (none but for a meter that sends a maker's signed code)
        part = readings[index]
        maker = part.signed_by()
        chosen = next((result for name, result in options if name == maker), None)
        reading = _signed(chosen, part, True) if chosen is not None else None
        if reading is not None:
            out.append(reading)
    return out


_Result = Tuple[Obis, str]
_Pairs = Tuple[Tuple[_Result, int, int], ...]
#: per reading that may be a maker's signed net power: its index and (maker, result) for each maker
_Signed = Tuple[Tuple[int, Tuple[Tuple[str, _Result], ...]], ...]

#: (((result code, its text), plus index, minus index) of each result, and the readings that may
#: be signed net power with their possible results), per layout of the readings
_PAIRS = LayoutMemo()


def _find_pairs(codes: Tuple[Optional[Obis], ...], readings: Tuple[Reading, ...]) -> Tuple[_Pairs, _Signed]:
    """((result code, its text), index of the plus part, index of the minus part) per result, in
    rule order; the result's A-B is the plus part's, and its text is written as the plus part's
    (fixed by the layout, like the indices). Then the codes a maker documents as signed net power
    (``_signed_candidates``): which maker sent them the readings say, each time."""
    # current codes (F 255 or none) by C.D.E, in meter order: what Obis.matches selects
    current: Dict[_CDE, List[int]] = {}
    for i, o in enumerate(codes):
        if o is not None and (o.f is None or o.f == 255):
            current.setdefault((o.c, o.d, o.e), []).append(i)
    out: List[Tuple[Tuple[Obis, str], int, int]] = []
    for code, cde, plus_cde, minus_cde in _plan():
        pluses, minuses = current.get(plus_cde), current.get(minus_cde)
        if pluses is None or minuses is None or cde in current:
            continue  # a part is missing, or the meter sent the code itself
        seen = set()
        for sent in pluses:
            a, b = codes[sent].a, codes[sent].b  # type: ignore[union-attr]
            if (a, b) in seen:
                continue
            seen.add((a, b))
            plus, minus = _first(codes, pluses, a, b), _first(codes, minuses, a, b)
            if plus is not None and minus is not None:
                part = codes[plus]  # (the plus part's own A-B, as _net takes it)
                result = _result_code(part.a, part.b, code)  # type: ignore[union-attr]
                out.append((_written_as(result, readings[plus]), plus, minus))
    return tuple(out), _signed_candidates(codes, readings, current, {r[0][0] for r in out})


def _signed_candidates(codes: Tuple[Optional[Obis], ...], readings: Tuple[Reading, ...],
                       current: Dict[_CDE, List[int]], taken: Set[Obis]) -> _Signed:
    """(index, ((maker, result), ...)) per reading whose code some maker documents as signed net
    power (obis.signed_net), where the meter did not send the net code itself and no import/export
    pair gave it; the first such reading of a result wins, as the first part does above."""
    makers = signed_net_makers()
    out = []
    seen: Set[Tuple[str, Obis]] = set()
    for i, o in enumerate(codes):
        if o is None or (o.c, o.d, o.e) not in makers or o.f not in (None, 255):
            continue
        options = []
        for maker in makers[(o.c, o.d, o.e)]:  # type: ignore[index]
            entry = signed_net(maker, o)
            if entry is None or entry[0] in current:
                continue
            result = _written_as(_result_code(o.a, o.b, _net_code(entry[0])), readings[i])
            if result[0] not in taken and (maker, result[0]) not in seen:
                seen.add((maker, result[0]))
                options.append((maker, result))
        if options:
            out.append((i, tuple(options)))
    return tuple(out)


def _like(part: Obis, wanted: Obis) -> Obis:
    """The part's code with the A-B the user asked for (so 1-1:16.7.0 uses 1-1:1.7.0)."""
    return Obis(wanted.a, wanted.b, part.c, part.d, part.e, None)


__all__ = ["derive", "derive_all", "rules"]
