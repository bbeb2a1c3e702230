"""Poll a DLMS/COSEM meter: discovery once, then the selected objects on every read.

``DlmsPoller(config).read()`` opens the port (through the injected opener), signs on in mode E
when configured, associates, reads, releases and closes; the result is a verified
``MeterData`` (kind ``poll``). Between reads it keeps what does not change: the object list
and every register's scaler/unit (read once, never guessed from the OBIS code), the time of the
last load-profile row (the next read asks only for newer rows), and the HLS invocation counter
(in ``state_file`` when configured, so a restart never reuses a counter the meter has seen).

A meter whose optical port does not offer mode E is read with the D0 readout instead
(``fallback_readout``), once detected for every later read too.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, TypeVar

from ..dlms.apdu import parse_datetime
from ..dlms.units import symbol
from ..errors import (AccessError, AuthenticationError, ConfigurationError, DecodeError, DlmsError,
                      TransportError)
from ..model import MeterData, Reading, Statistics, Value, json_value
from ..obis import Obis, best_identity, identity_rank
from ..transport import Transport
from .config import PollConfig, parse_code
from .session import DlmsSession, Opener, default_opener
from .signon import ModeERefused, sign_on_mode_e

log = logging.getLogger(__name__)
_T = TypeVar("_T")

CLASS_DATA, CLASS_REGISTER, CLASS_EXTENDED, CLASS_DEMAND, CLASS_PROFILE, CLASS_CLOCK = 1, 3, 4, 5, 7, 8
VALUE_CLASSES = (CLASS_DATA, CLASS_REGISTER, CLASS_EXTENDED, CLASS_DEMAND, CLASS_CLOCK)
_EPOCH = datetime(2000, 1, 1)


@dataclass
class PolledObject:
    """An object from the association's object list, with its scaler and unit once read."""

    class_id: int
    ln: str
    obis: Obis
    gx: Any = field(repr=False)
    scaler: Optional[int] = None
    unit: Optional[int] = None

    @property
    def scaler_attr(self) -> Optional[int]:
        return {CLASS_REGISTER: 3, CLASS_EXTENDED: 3, CLASS_DEMAND: 4}.get(self.class_id)

    @property
    def code(self) -> str:
        return self.obis.dotted() or self.ln


@dataclass(frozen=True)
class ProfileRow:
    """One load-profile entry: capture time and the values of its columns (scaled)."""

    time: Optional[datetime]
    values: Tuple[Tuple[str, Value, Optional[str]], ...]

    def to_json(self) -> Dict[str, Any]:
        """Values by ``model.json_value``, the rule of every JSON output (numbers stay numbers, exactly)."""
        return {"time": self.time.isoformat() if self.time else None,
                "values": {code: json_value(v) for code, v, _ in self.values},
                "units": {code: unit for code, _, unit in self.values if unit}}


def _ln_obis(ln: str) -> Obis:
    return Obis(*(int(p) for p in ln.split(".")))


def physical(raw: Any, scaler: Optional[int]) -> Value:
    """A gurux raw value as a model ``Value`` (Decimal with the scaler applied; never float drift)."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        return Decimal(raw).scaleb(scaler) if scaler else Decimal(raw)
    if isinstance(raw, float):
        value = Decimal(repr(raw))
        return value.scaleb(scaler) if scaler else value
    if isinstance(raw, (bytes, bytearray)):
        data = bytes(raw)
        if len(data) == 12:
            when = parse_datetime(data)
            if when is not None:
                return when
        if data and all(32 <= b < 127 for b in data):
            return data.decode("ascii")
        return data
    if isinstance(raw, str):
        return raw
    inner = getattr(raw, "value", None)  # GXDateTime, GXEnum ...
    if isinstance(inner, datetime):
        return inner
    return None if raw is None else str(raw)


def _identity_of(catalog: List[PolledObject], chosen: List[PolledObject], refused: Set[str]) -> List[PolledObject]:
    """The object that names this meter best (``obis.identity_rank``: serial number, logical device
    name ...) when none of ``chosen`` does: one more attribute in the same request gives the snapshot
    its meter id, which the web interface, MQTT's device and Victron's /Serial show. Empty when
    ``chosen`` has one, or the object list has none this client may read (``refused``)."""
    if any(identity_rank(o.obis) is not None for o in chosen):
        return []
    ranked = [(rank, i, o) for i, o in enumerate(catalog) if o.class_id == CLASS_DATA and o.code not in refused
              for rank in (identity_rank(o.obis),) if rank is not None]
    return [min(ranked)[2]] if ranked else []


def _derivation_inputs(codes: List[Obis]) -> List[Obis]:
    """The registers the pipeline derives ``codes`` from (net power = import - export), so that a
    selection asking for a derived register polls what it needs (``data/derived.json``)."""
    from ..derive import rules

    out = []
    for code in codes:
        for target, plus, minus in rules():
            if (code.c, code.d, code.e) == (target.c, target.d, target.e):
                out += [Obis(code.a, code.b, part.c, part.d, part.e, code.f) for part in (plus, minus)]
    return out


class DlmsPoller:
    """Reads one meter; thread-safe for one reader and a ``close()`` from another thread."""

    def __init__(self, config: PollConfig, stats: Optional[Statistics] = None, *, opener: Opener = default_opener,
                 time_scale: float = 1.0, readout_factory: Optional[Callable[[], Any]] = None) -> None:
        self.config = config
        self.stats = stats if stats is not None else Statistics()
        self.opener = opener
        self.time_scale = time_scale
        self.readout_factory = readout_factory
        self.catalog: Optional[List[PolledObject]] = None
        self.identification: Optional[str] = None
        #: identity objects read for the meter id that this client may not read (``_identity_of``)
        self._identity_refused: Set[str] = set()
        self.mode_e_refused = False
        self.profile_last: Dict[str, datetime] = {}
        #: rows of each profile that the last read added (only new ones)
        self.last_profile_rows: Dict[str, List[ProfileRow]] = {}
        #: objects the meter refused to hand out (code -> the error naming cause and fix)
        self.unreadable: Dict[str, AccessError] = {}
        self.last_timings: Dict[str, float] = {}
        self.last_session: Optional[DlmsSession] = None
        self._lock = threading.Lock()
        self._transport: Optional[Transport] = None
        self._closing = False
        self._t_link = 0.0  # (when the last session's link stood: the sign-on's end)
        #: the invocation counter is known (a state file, or read from the meter): no public read
        self._counter_known = False
        self._load_state()

    # ------------------------------------------------------------------ state
    def _load_state(self) -> None:
        path = self.config.state_file
        if not path or not os.path.exists(path):
            return
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
            counter = int(state.get("invocation_counter", 0))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("cannot read the state file %s (%s); starting from invocation_counter %d", path, exc,
                        self.config.invocation_counter)
            return
        self.config.invocation_counter = max(self.config.invocation_counter, counter)
        self._counter_known = True

    def _learn_counter(self) -> None:
        """Read the invocation counter the meter has seen (``invocation_counter_ln``, a Data
        object the public client 16 may read, as gurux's reader does) and continue above it: a
        restart without a state file, or a counter another client moved, would otherwise be
        refused as a replay at every association. Best effort: a meter without the object, or
        without a public client, keeps the configured counter (the log says how to set it)."""
        cfg = self.config
        if cfg.authentication != "high_gmac" or not cfg.invocation_counter_ln or self._counter_known:
            return
        from gurux_dlms.objects import GXDLMSData

        public = replace(cfg, client_address=16, authentication="none", password=None, key=None, auth_key=None)
        try:
            raw = self._with_session(public, lambda session: session.get(GXDLMSData(cfg.invocation_counter_ln), 2))
            seen = int(raw)
        except (TransportError, ModeERefused):
            raise  # (the port, not the counter: this read fails as such, the next one asks again)
        except (DlmsError, ValueError, TypeError) as exc:
            log.warning("cannot read the invocation counter from %s through the public client (%s); associating "
                        "with %d: if the meter refuses it, set invocation_counter above the meter's, or keep a "
                        "state_file", cfg.invocation_counter_ln, exc, cfg.invocation_counter)
            self._counter_known = True  # (asked once; a refusal asks again)
            return
        self._counter_known = True
        if seen + 1 > cfg.invocation_counter:
            log.info("the meter's invocation counter (%s) is %d: associating with %d", cfg.invocation_counter_ln,
                     seen, seen + 1)
            cfg.invocation_counter = seen + 1

    def _save_state(self, session: DlmsSession) -> None:
        counter = session.invocation_counter
        if counter is None:
            return
        self.config.invocation_counter = max(self.config.invocation_counter, counter)
        path = self.config.state_file
        if not path:
            return
        tmp = path + ".tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump({"invocation_counter": self.config.invocation_counter}, fh)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write the state file %s: %s", path, exc)

    # ------------------------------------------------------------------- public
    def read(self, discover: bool = False) -> MeterData:
        """One poll: the selected objects (``discover``: every value object, scalers re-read)."""
        with self._lock:
            self._closing = False
            if self.mode_e_refused and self.readout_factory is not None:
                return self._readout()
            try:
                data = self._poll(discover)
            except ModeERefused as exc:
                self.stats.error(exc)
                if not (self.config.fallback_readout and self.readout_factory is not None):
                    raise
                log.warning("%s; reading the mode C readout instead", exc.cause)
                self.mode_e_refused = True
                return self._readout()
            except DlmsError as exc:
                if not (self._closing and isinstance(exc, TransportError)):
                    self.stats.error(exc)
                raise
            self.stats.success("reads")
            return data

    def close(self) -> None:
        """End a running read (from another thread) and release the port."""
        self._closing = True
        transport = self._transport
        if transport is not None:
            transport.close()

    # ---------------------------------------------------------------- internals
    def _readout(self) -> MeterData:
        """The mode C readout of a meter whose optical port refused mode E (the D0 reader)."""
        if self.readout_factory is None:
            raise ConfigurationError("no readout to fall back to", "set fallback_readout (the source does)")
        reader = self.readout_factory()
        try:
            data = reader.read()
        finally:
            reader.close()
        self.stats.success("reads")
        return data

    def _poll(self, discover: bool) -> MeterData:
        try:
            return self._poll_port(discover)
        except TransportError as exc:
            if not self.config.port.startswith("tcp://") or self._closing:
                raise
            # the transport speaks of serial servers (ser2net) and adapters: this is a meter on the network
            raise TransportError(exc.cause.replace(self.config.url, self.config.port),
                                 "check the meter's DLMS/IP port (usually 4059) and that the meter or its gateway "
                                 "is reachable on the network; many take one client at a time") from None

    def _poll_port(self, discover: bool) -> MeterData:
        cfg = self.config
        self._learn_counter()
        t0 = time.monotonic()

        def work(session: DlmsSession) -> Tuple[List[Reading], Optional[datetime], float, DlmsSession]:
            t_assoc = time.monotonic()
            readings = self._read_values(session, discover)
            meter_time = self._meter_time(session, readings)
            self._read_profiles(session, meter_time)
            return readings, meter_time, t_assoc, session

        readings, meter_time, t_assoc, session = self._with_session(cfg, work)
        t_end = time.monotonic()
        self.last_timings = {"sign-on": self._t_link - t0, "association": t_assoc - self._t_link,
                             "reading": t_end - t_assoc, "total": t_end - t0}
        for phase, seconds in self.last_timings.items():
            self.stats.timing(phase, seconds)
        self.stats.count("bytes", session.bytes_in)
        serial = best_identity((r.obis, r.value.strip()) for r in readings if isinstance(r.value, str))
        return MeterData(kind="poll", readings=tuple(readings), received=time.time(), meter_time=meter_time,
                         meter_id=serial or self.identification, text=f"{len(readings)} objects polled",
                         profile="dlms-poll")

    def _with_session(self, cfg: PollConfig, work: Callable[[DlmsSession], _T]) -> _T:
        """Open the port, sign on (mode E), associate as ``cfg`` says, ``work``, then release
        and close whatever happened; a refused HLS association asks the meter's counter again."""
        transport = self.opener(cfg.url, 300 if cfg.mode_e else cfg.baudrate)
        transport.time_scale = self.time_scale
        self._transport = transport
        try:
            if cfg.mode_e:
                ident = sign_on_mode_e(transport, cfg, self.time_scale)
                self.identification = ident.raw
            self._t_link = time.monotonic()
            session = DlmsSession(cfg, transport)
            self.last_session = session
            try:
                session.connect()
                return work(session)
            except AuthenticationError:
                self._counter_known = False  # (a counter the meter has seen, maybe: read it next time)
                raise
            finally:
                session.release()
                self._save_state(session)
        finally:
            self._transport = None
            transport.close()

    def _meter_time(self, session: DlmsSession, readings: List[Reading]) -> Optional[datetime]:
        """The meter's clock from this read; read separately when a load profile needs it."""
        for r in readings:
            if r.obis is not None and (r.obis.a, r.obis.c, r.obis.d) == (0, 1, 0) and isinstance(r.value, datetime):
                return r.value
        clock = next((o for o in self.catalog or [] if o.class_id == CLASS_CLOCK), None)
        if not self.config.profiles or clock is None:
            return None
        value = physical(session.get(clock.gx, 2), None)
        return value if isinstance(value, datetime) else None

    # ------------------------------------------------------------------ objects
    def _discover(self, session: DlmsSession) -> List[PolledObject]:
        catalog = []
        for gx in session.objects():
            ln = str(gx.logicalName)
            try:
                code = _ln_obis(ln)
            except (ValueError, TypeError):
                continue
            catalog.append(PolledObject(int(gx.objectType), ln, code, gx))
        return catalog

    def _selected(self, catalog: List[PolledObject], discover: bool) -> List[PolledObject]:
        values = [o for o in catalog if o.class_id in VALUE_CLASSES]
        if discover or not self.config.obis:
            return values
        patterns = [parse_code(p) for p in self.config.obis]
        missing = [p for p in patterns if not any(p.matches(o.obis) for o in values)]
        patterns += _derivation_inputs(missing)
        chosen = [o for o in values if any(p.matches(o.obis) for p in patterns)]
        underivable = [p for p in missing if not _derivation_inputs([p])]
        if underivable:
            log.warning("not in the meter's object list: %s (see poll --list)", ", ".join(map(str, underivable)))
        return chosen

    def _read_values(self, session: DlmsSession, discover: bool) -> List[Reading]:
        if self.catalog is None or discover:
            self.catalog = self._discover(session)
            self.stats.count("discoveries")
        chosen = self._selected(self.catalog, discover)
        known = [self.unreadable[o.code] for o in chosen if o.code in self.unreadable and not discover]
        if known and len(known) == len(chosen):
            raise known[0]  # (nothing this client may read was asked for)
        # what the meter refused this client once it refuses again (rights do not change per read):
        # asked again, one refusal in a GET with-list made every cycle read everything twice
        chosen = [o for o in chosen if discover or o.code not in self.unreadable]
        ident = _identity_of(self.catalog, chosen, self._identity_refused)  # (read for the meter id only)
        chosen += ident
        unscaled = self._load_scalers(session, [o for o in chosen if o.scaler is None or discover])
        chosen = [o for o in chosen if o.code not in unscaled]  # (a value without its scaler: never read)
        raws = session.get_list([(o.gx, 2) for o in chosen], tolerant=True)
        readings: List[Reading] = []
        refused = [self._refused(code, err) for code, err in unscaled.items()]
        for obj, raw in zip(chosen, raws):
            if isinstance(raw, AccessError) and obj in ident:
                self._identity_refused.add(obj.code)  # nobody asked for it: no error, not asked again
                continue
            if isinstance(raw, AccessError):
                refused.append(self._refused(obj.code, raw))
                continue
            if isinstance(raw, int) and not isinstance(raw, bool) and obj.scaler_attr is None:
                value: Value = Decimal(raw)
            else:
                value = physical(raw, obj.scaler)
            unit = symbol(obj.unit) if obj.unit is not None else None
            readings.append(Reading(code=obj.code, obis=obj.obis, value=value, unit=unit,
                                    raw=raw if isinstance(raw, (int, str)) else None,
                                    scaler=obj.scaler, index=len(readings)))
        if refused and all(obj in ident for obj in chosen if obj.code not in self.unreadable):
            raise refused[0]  # nothing asked for was read, only the meter id (counted by read())
        for err in refused:
            self.stats.error(err)
        return readings

    def _refused(self, code: str, err: AccessError) -> AccessError:
        """An object the meter would not let this client read: warned once, listed as unreadable."""
        if code not in self.unreadable:
            log.warning("%s", err)
        self.unreadable[code] = err
        return err

    @staticmethod
    def _load_scalers(session: DlmsSession, objects: List[PolledObject]) -> Dict[str, AccessError]:
        """Read scaler_unit of the registers among ``objects`` (before any value of theirs is used).
        Returns the ones whose scaler the meter refused (a register this client may not read), by
        code: one such register must not cost the others their values, nor give its own unscaled."""
        need = [o for o in objects if o.scaler_attr is not None]
        attrs = [(o.gx, int(o.scaler_attr or 0)) for o in need]
        refused: Dict[str, AccessError] = {}
        if not need:
            return refused
        for obj, raw in zip(need, session.get_list(attrs, tolerant=True)):
            if isinstance(raw, AccessError):
                refused[obj.code] = raw
                continue
            if not (isinstance(raw, list) and len(raw) == 2):
                raise DecodeError(f"{obj.ln}: scaler_unit is no structure of two elements ({raw!r})",
                                  "the meter answered something else than a register's scaler and unit")
            obj.scaler, obj.unit = int(raw[0]), int(raw[1])
        return refused

    # ----------------------------------------------------------------- profiles
    def _read_profiles(self, session: DlmsSession, meter_time: Optional[datetime]) -> None:
        self.last_profile_rows = {}
        if not self.config.profiles or self.catalog is None:
            return
        for wanted in self.config.profiles:
            pattern = parse_code(wanted)
            profile = next((o for o in self.catalog if o.class_id == CLASS_PROFILE and pattern.matches(o.obis)), None)
            if profile is None:
                log.warning("load profile %s is not in the meter's object list", wanted)
                continue
            self.last_profile_rows[profile.code] = self._profile_rows(session, profile, meter_time)

    def _profile_rows(self, session: DlmsSession, profile: PolledObject, meter_time: Optional[datetime]) \
            -> List[ProfileRow]:
        gx = profile.gx
        if not gx.captureObjects:
            session.client.updateValue(gx, 3, session.get(gx, 3))
        columns = [(str(obj.logicalName), int(obj.objectType)) for obj, _ in gx.captureObjects]
        last = self.profile_last.get(profile.code)
        start = _range_time(last + timedelta(seconds=1)) if last is not None else _EPOCH
        end = _range_time((meter_time or datetime.now()) + timedelta(minutes=1))
        raw_rows = session.rows_by_range(gx, start, end) or []
        scalers = {o.ln: o for o in (self.catalog or [])}
        unscaled = self._load_scalers(session, [scalers[ln] for ln, _ in columns
                                                if ln in scalers and scalers[ln].scaler is None])
        for code, err in unscaled.items():
            self._refused(code, err)
        rows = []
        for raw in raw_rows:
            values: List[Tuple[str, Value, Optional[str]]] = []
            when: Optional[datetime] = None
            for (ln, class_id), cell in zip(columns, raw):
                if class_id == CLASS_CLOCK:
                    stamp = physical(cell, None)
                    when = stamp if isinstance(stamp, datetime) else None
                    continue
                col = scalers.get(ln)
                code = _ln_obis(ln).dotted() or ln
                if col is not None and code in unscaled:
                    values.append((code, None, None))  # (its scaler refused: no unscaled number)
                    continue
                value = physical(cell, col.scaler if col is not None else None)
                unit = symbol(col.unit) if col is not None and col.unit is not None else None
                values.append((code, value, unit))
            if when is not None and last is not None and not _later(when, last):
                continue  # a meter that ignores the range start: never hand out a row twice
            rows.append(ProfileRow(when, tuple(values)))
        stamps = [r.time for r in rows if r.time is not None]
        if stamps:
            self.profile_last[profile.code] = max(stamps, key=_instant)
        self.stats.count("profile_rows", len(rows))
        return rows


def _instant(when: datetime) -> Tuple[float, datetime]:
    """A sort key: rows with their offset as instants (the hour that repeats in autumn sorts right)."""
    return (when.timestamp() if when.tzinfo is not None else 0.0, when.replace(tzinfo=None))


def _later(when: datetime, last: datetime) -> bool:
    """Is a row's time after the last row handed out? As instants when both carry the meter's
    offset (a host in another zone, the autumn hour that repeats: 02:30+01:00 comes after
    02:45+02:00), else as the meter's wall-clock times."""
    if (when.tzinfo is None) != (last.tzinfo is None):
        return when.replace(tzinfo=None) > last.replace(tzinfo=None)
    return when > last


def _range_time(when: datetime) -> Any:
    """A time for a range read as the meter means it: with the meter's own offset when it has
    one; without one as the meter's local time (deviation 'not specified'), where gurux would
    claim the host's offset, which is another time on a meter in another zone."""
    from gurux_dlms import GXDateTime
    from gurux_dlms.enums import DateTimeSkips

    out = GXDateTime(when)
    if when.tzinfo is None:
        out.skip |= DateTimeSkips.DEVITATION
    return out


__all__ = ["DlmsPoller", "PolledObject", "ProfileRow", "physical"]
