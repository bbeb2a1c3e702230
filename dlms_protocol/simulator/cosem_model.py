"""The objects of a simulated DLMS/COSEM meter: registers, clock, load profile, object list.

Why a model of our own and not gurux's server objects: gurux-dlms 1.0.203's ``GXDLMSServer``
cannot answer a single SNRM without patching the library (see ``dlms_server``), so the
simulated meter keeps its objects as plain data and encodes attributes with the project's
A-XDR encoder (``dlms.apdu.encode_data``). gurux's *client* then reads them, which is the
independent check that the encoding is right.

Every attribute is produced on demand (``CosemObject.attribute``), so values the tests
change (``set_value``, ``add_profile_row``) are what the next GET returns.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..dlms.apdu import Array, Structure, encode_data, encode_datetime_value

#: attribute id -> function giving the A-XDR encoded value
Getter = Callable[[], bytes]

CLASS_DATA, CLASS_REGISTER, CLASS_EXTENDED_REGISTER, CLASS_DEMAND_REGISTER = 1, 3, 4, 5
CLASS_PROFILE_GENERIC, CLASS_CLOCK, CLASS_ASSOCIATION_LN = 7, 8, 15

ASSOCIATION_LN = "0.0.40.0.0.255"
CLOCK_LN = "0.0.1.0.0.255"
FRAME_COUNTER_LN = "0.0.43.1.0.255"

#: attributes per class (id 1 is the logical name); used for the object list's access rights
_ATTRIBUTES = {1: 2, 3: 3, 4: 5, 5: 9, 7: 8, 8: 9, 15: 11}


def typed(kind: type, *items: Tuple[str, Any]) -> Any:
    """A ``Structure``/``Array`` whose elements carry their DLMS type names."""
    out = kind(value for _, value in items)
    out.types = tuple(name for name, _ in items)
    return out


def ln_bytes(ln: str) -> bytes:
    """``"1.0.1.8.0.255"`` (gurux's dotted form) as the 6-byte logical name."""
    return bytes(int(part) for part in ln.split("."))


def octet_datetime(when: datetime) -> bytes:
    """A date-time as the 12-byte octet string COSEM objects carry: with its deviation when it
    has an offset (a meter that states its zone), else deviation unspecified (meter local time)."""
    if when.tzinfo is not None:
        return encode_datetime_value(when)
    raw = bytearray(encode_datetime_value(when))
    raw[9:11] = b"\x80\x00"  # deviation not specified: meter local time
    return bytes(raw)


@dataclass
class CosemObject:
    """One COSEM object: class, version, logical name and its readable attributes."""

    class_id: int
    ln: str
    attributes: Dict[int, Getter]
    version: int = 0
    #: client SAPs that may read attribute 2 and up (None: every association)
    readers: Optional[Tuple[int, ...]] = None

    @property
    def ln_raw(self) -> bytes:
        return ln_bytes(self.ln)

    def attribute(self, attr: int) -> Optional[bytes]:
        if attr == 1:
            return encode_data(self.ln_raw, "octet-string")
        getter = self.attributes.get(attr)
        return getter() if getter is not None else None

    def may_read(self, client: int, attr: int) -> bool:
        return attr == 1 or self.readers is None or client in self.readers


@dataclass
class RegisterSpec:
    """A register (class 3), extended register (4) or demand register (5) of the model."""

    ln: str
    value: int
    scaler: int
    unit: int
    class_id: int = CLASS_REGISTER
    value_type: str = "double-long-unsigned"
    #: client SAPs that may read its value and scaler (None: every association)
    readers: Optional[Tuple[int, ...]] = None


@dataclass
class ProfileRow:
    when: datetime
    values: Tuple[int, ...]


@dataclass
class MeterModel:
    """The meter's state; thread-safe enough for one server thread and a test changing values."""

    serial: str = "12345678"
    registers: List[RegisterSpec] = field(default_factory=list)
    clock: datetime = datetime(2026, 12, 2, 12, 0, 0)
    profile_ln: str = "1.0.99.1.0.255"
    profile_columns: Tuple[str, ...] = ("1.0.1.8.0.255", "1.0.2.8.0.255")
    profile_rows: List[ProfileRow] = field(default_factory=list)
    capture_period: int = 900
    frame_counter: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # ---------------------------------------------------------------- changes
    def set_value(self, ln: str, value: int) -> None:
        with self.lock:
            for reg in self.registers:
                if reg.ln == ln:
                    reg.value = value
                    return
        raise KeyError(ln)

    def add_profile_row(self, values: Sequence[int], when: Optional[datetime] = None) -> ProfileRow:
        with self.lock:
            if when is None:
                last = self.profile_rows[-1].when if self.profile_rows else self.clock
                when = last + timedelta(seconds=self.capture_period)
            row = ProfileRow(when, tuple(values))
            self.profile_rows.append(row)
            if when > self.clock:
                self.clock = when
            return row

    # ------------------------------------------------------------------ objects
    def objects(self) -> List[CosemObject]:
        """Every object of the meter, in object-list order."""
        out = [self._association(), self._data("0.0.96.1.0.255", lambda: encode_data(self.serial.encode(),
                                                                                        "octet-string")),
               self._data("0.0.96.1.1.255", lambda: encode_data(b"secret", "octet-string"), readers=(1,)),
               self._data(FRAME_COUNTER_LN, lambda: encode_data(self.frame_counter, "double-long-unsigned")),
               self._clock()]
        out += [self._register(reg) for reg in self.registers]
        out.append(self._profile())
        return out

    def find(self, class_id: int, ln_raw: bytes) -> Optional[CosemObject]:
        for obj in self.objects():
            if obj.ln_raw == ln_raw and obj.class_id == class_id:
                return obj
        return None

    def _data(self, ln: str, getter: Getter, readers: Optional[Tuple[int, ...]] = None) -> CosemObject:
        return CosemObject(CLASS_DATA, ln, {2: getter}, readers=readers)

    def _register(self, reg: RegisterSpec) -> CosemObject:
        def value() -> bytes:
            with self.lock:
                return encode_data(reg.value, reg.value_type)

        def scaler_unit() -> bytes:
            return encode_data(typed(Structure, ("integer", reg.scaler), ("enum", reg.unit)))

        stamp = lambda: encode_data(octet_datetime(self.clock), "octet-string")  # noqa: E731
        if reg.class_id == CLASS_EXTENDED_REGISTER:
            attrs = {2: value, 3: scaler_unit, 4: lambda: encode_data(0, "unsigned"), 5: stamp}
        elif reg.class_id == CLASS_DEMAND_REGISTER:
            attrs = {2: value, 3: value, 4: scaler_unit, 5: lambda: encode_data(0, "unsigned"), 6: stamp, 7: stamp,
                     8: lambda: encode_data(self.capture_period, "double-long-unsigned"),
                     9: lambda: encode_data(1, "long-unsigned")}
        else:
            attrs = {2: value, 3: scaler_unit}
        return CosemObject(reg.class_id, reg.ln, attrs, readers=reg.readers)

    def _clock(self) -> CosemObject:
        return CosemObject(CLASS_CLOCK, CLOCK_LN, {
            2: lambda: encode_data(octet_datetime(self.clock), "octet-string"),
            3: lambda: encode_data(-60, "long"),
            4: lambda: encode_data(0, "unsigned"),
            5: lambda: encode_data(b"\xff\xff\x03\xfe\x07\x02\x00\x00\x00\x80\x00\x00", "octet-string"),
            6: lambda: encode_data(b"\xff\xff\x0a\xfe\x07\x03\x00\x00\x00\x80\x00\x00", "octet-string"),
            7: lambda: encode_data(60, "integer"),
            8: lambda: encode_data(True, "boolean"),
            9: lambda: encode_data(1, "enum"),
        })

    def capture_objects(self) -> List[Tuple[int, str, int]]:
        return [(CLASS_CLOCK, CLOCK_LN, 2)] + [(CLASS_REGISTER, ln, 2) for ln in self.profile_columns]

    def _profile(self) -> CosemObject:
        def capture() -> bytes:
            items = [typed(Structure, ("long-unsigned", cls), ("octet-string", ln_bytes(ln)), ("integer", attr),
                           ("long-unsigned", 0)) for cls, ln, attr in self.capture_objects()]
            return encode_data(typed(Array, *(("structure", it) for it in items)))

        return CosemObject(CLASS_PROFILE_GENERIC, self.profile_ln, {
            2: lambda: self.encode_rows(self.profile_rows),
            3: capture,
            4: lambda: encode_data(self.capture_period, "double-long-unsigned"),
            5: lambda: encode_data(1, "enum"),
            6: lambda: encode_data(typed(Structure, ("long-unsigned", 0), ("octet-string", bytes(6)), ("integer", 0),
                                         ("long-unsigned", 0))),
            7: lambda: encode_data(len(self.profile_rows), "double-long-unsigned"),
            8: lambda: encode_data(max(1000, len(self.profile_rows)), "double-long-unsigned"),
        })

    def encode_rows(self, rows: Sequence[ProfileRow]) -> bytes:
        """The buffer (attribute 2) holding ``rows``: array of structure{date-time, values...}."""
        with self.lock:
            items = [typed(Structure, ("octet-string", octet_datetime(r.when)),
                           *(("double-long-unsigned", v) for v in r.values)) for r in rows]
        return encode_data(typed(Array, *(("structure", it) for it in items)))

    def _association(self) -> CosemObject:
        def object_list() -> bytes:
            entries = []
            for obj in self.objects():
                count = _ATTRIBUTES.get(obj.class_id, 2)
                attrs = typed(Array, *(("structure", typed(Structure, ("integer", i), ("enum", 1), ("null-data", None)))
                                       for i in range(1, count + 1)))
                entries.append(typed(Structure, ("long-unsigned", obj.class_id), ("unsigned", obj.version),
                                     ("octet-string", obj.ln_raw),
                                     ("structure", typed(Structure, ("array", attrs), ("array", typed(Array))))))
            return encode_data(typed(Array, *(("structure", e) for e in entries)))

        return CosemObject(CLASS_ASSOCIATION_LN, ASSOCIATION_LN, {2: object_list}, version=1)


def demo_model(rows: int = 8) -> MeterModel:
    """The meter the demo, the tests and the bench poll: an E450-like three-phase meter."""
    model = MeterModel(registers=[
        RegisterSpec("1.0.1.8.0.255", 12345678, 0, 30),
        RegisterSpec("1.0.2.8.0.255", 2345678, 0, 30),
        RegisterSpec("1.0.1.8.1.255", 8345678, 0, 30),
        RegisterSpec("1.0.1.8.2.255", 4000000, 0, 30),
        RegisterSpec("1.0.1.7.0.255", 1234, 0, 27),
        RegisterSpec("1.0.2.7.0.255", 0, 0, 27),
        RegisterSpec("1.0.32.7.0.255", 2301, -1, 35, value_type="long-unsigned"),
        RegisterSpec("1.0.52.7.0.255", 2298, -1, 35, value_type="long-unsigned"),
        RegisterSpec("1.0.72.7.0.255", 2305, -1, 35, value_type="long-unsigned"),
        RegisterSpec("1.0.31.7.0.255", 152, -2, 33, value_type="long-unsigned"),
        RegisterSpec("1.0.14.7.0.255", 5001, -2, 44, value_type="long-unsigned"),
        RegisterSpec("1.0.1.6.0.255", 4321, 0, 27, class_id=CLASS_EXTENDED_REGISTER),
        RegisterSpec("1.0.1.4.0.255", 812, 0, 27, class_id=CLASS_DEMAND_REGISTER),
    ])
    start = model.clock - timedelta(seconds=model.capture_period * rows)
    for i in range(rows):
        model.profile_rows.append(ProfileRow(start + timedelta(seconds=model.capture_period * (i + 1)),
                                             (12340000 + 100 * i, 2340000 + 10 * i)))
    return model


__all__ = ["MeterModel", "RegisterSpec", "ProfileRow", "CosemObject", "demo_model", "ln_bytes", "octet_datetime",
           "typed", "ASSOCIATION_LN", "CLOCK_LN", "FRAME_COUNTER_LN"]
