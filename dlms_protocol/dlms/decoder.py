"""The push decode pipeline: bytes → frames → block transfer → decryption → APDU → readings.

``PushDecoder.feed(chunk)`` is what the listener, the CLI and the plugin call with whatever
the port delivered; it returns the messages that passed every check (checksums, the GCM tag
when the authentication key is known, a complete decode). Errors are counted in
``Statistics`` under separate names (``checksum_errors``, ``framing_errors``,
``decrypt_failures``, ``tag_failures``, ``decode_errors``, ``unknown_layouts``,
``incomplete_messages``, and the security policy's ``plaintext_rejected``, ``downgrades``,
``replays``) next to the
success counters (``bytes``, ``frames``, ``apdus``, ``decrypted``, ``messages``), so a wrong
key never looks like "no data" (user pain #3). They go to ``on_error`` and are never raised out
of ``feed``: one bad frame must not stop a listener (pain #19).

Sans-io like the layers below it: no logging and no clock. The driver logs the errors (the push
listener at a limited rate, the CLI in its own words) and what the decoder noted (``take_notes``:
the AES engine chosen, a profile problem, a counter the meter restarted), and gives each
message its receive time (``PushMessage.to_meter_data``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..config import ListenerConfig
from ..errors import ChecksumError, DecodeError, DlmsError, FramingError, UnknownLayoutError
from ..jsonform import readings_json
from ..model import LayoutMemo, MeterData, Reading, Statistics, decimal_text, frozen_of, json_value
from ..ratelimit import Once
from .apdu import decode_apdu
from .deframer import Deframer
from .gbt import GbtAssembler
from .payload import interpret, interpret_text, unknown_layout_error
from .profiles import load_profiles
from .scalecheck import RangeCheck, ScaleCheck
from . import gcm, hdlc
from .security import PUBLISHED_AUTH_KEYS, SecurityPolicy, decipher
from .template import Template, learn
from .wrapper import GENERAL_BLOCK_TRANSFER

#: the longest quiet (s) inside a message of several parts that is waited out before this meter
#: has sent one (``PushDecoder.settle``): an L+G E450 pauses 3 s before its last frame
PART_PAUSE_UNLEARNED = 5.0
#: the most a learned pause allows (a pause longer than the unlearned one only grows it stepwise)
PART_PAUSE_MAX = 10.0
#: how often the caller settles a quiet line at the least (the listener's longest idle read): the
#: pause ``settle`` notes inside a message ends up to this much before the next part came
SETTLE_EVERY = 1.0

#: full decodes in a row after which a meter's layout is not learned for LEARN_PAUSE frames
LEARN_TRIES = 8
LEARN_PAUSE = 500
MAX_TEMPLATES = 8


def _display(value: Any) -> str:
    if value.__class__ is Decimal:
        return decimal_text(value)
    shown = json_value(value)
    return str(shown) if not isinstance(shown, list) else repr(shown)


_LineParts = Tuple[str, str, str]
#: the fixed parts of each line of a rendering, per layout (codes, indexes, units): a meter sends
#: the same list every time with the same code objects, and naming the codes cost more than the values
_LAYOUTS = LayoutMemo(64)


def _line_parts(readings: Tuple[Reading, ...]) -> Tuple[_LineParts, ...]:
    """(text before the value, text after it, the note after a raw value) per reading."""
    # (a value without a code is named by its profile: two profiles may share positions and units)
    return _LAYOUTS.get(readings, lambda _codes: _build_line_parts(readings),  # type: ignore[no-any-return]
                        tuple([(r.index, r.unit) if r.obis is not None else (r.index, r.unit, r.name)
                               for r in readings]))


def _is_number(raw: object) -> bool:
    """Only a number lacks a scaler; a structure or octets without a value are just raw."""
    return isinstance(raw, int) and not isinstance(raw, bool)


def _build_line_parts(readings: Tuple[Reading, ...]) -> Tuple[_LineParts, ...]:
    built = []
    for r in readings:
        code = r.obis.dotted() if r.obis is not None else f"#{r.index}"
        unit = f" {r.unit}" if r.unit else ""
        name = r.name or ""
        built.append((f"  {code:<20} ", unit + (f"  ({name})" if name else ""),
                      " (raw; scaler unknown)" if r.obis is not None and _is_number(r.raw) else " (raw)"))
    return tuple(built)


@dataclass(frozen=True)
class PushMessage:
    """One decoded push, every check passed. ``apdu`` is the plaintext APDU, ``raw`` the frames."""

    wrapper: str
    ciphered: bool
    tag_verified: Optional[bool]
    timestamp: Optional[datetime]
    profile: Optional[str]
    readings: Tuple[Reading, ...]
    apdu: bytes
    raw: bytes
    system_title: Optional[bytes]
    #: identification from the readings (serial number), when the profile or an OBIS code names it
    serial: Optional[str] = None
    #: True when no profile explained a positional frame: readings carry positions, no OBIS codes
    unknown_layout: bool = False
    #: the link-layer checksum every frame of it passed (``HDLC FCS``, ``M-Bus checksum``), None: none exists
    link_check: Optional[str] = None
    #: a ciphered message's security control byte and invocation counter (the driver's debug log)
    security_control: Optional[int] = None
    invocation_counter: Optional[int] = None

    @property
    def checksum(self) -> str:
        """What was verified: ``HDLC FCS``, ``M-Bus checksum``, ``GCM tag``, joined by `` + ``, or ``none``."""
        checks = [c for c in (self.link_check, "GCM tag" if self.tag_verified else None) if c]
        return " + ".join(checks) if checks else "none"

    def to_json(self) -> dict:
        """The JSON contract of ``decode``/``listen --json`` (one object per message); the readings
        in the one form of ``jsonform.reading_json``."""
        return {
            "wrapper": self.wrapper,
            "ciphered": self.ciphered,
            "tag_verified": self.tag_verified,
            "checksum": self.checksum,
            "timestamp": self.timestamp.isoformat() if self.timestamp is not None else None,
            "profile": self.profile,
            "readings": readings_json(self.readings),
            "meter_id": self.meter_id,
        }

    @property
    def meter_id(self) -> Optional[str]:
        """The system title (hex), else a serial-number reading, else None."""
        if self.system_title:
            return self.system_title.hex().upper()
        if self.serial:
            return self.serial
        for r in self.readings:
            if r.obis is not None and r.obis.is_serial() and isinstance(r.value, str):
                return r.value
        return None

    def protection(self) -> str:
        """'plain', 'ciphered, no tag' (security 0x20 carries none), or the tag's verdict."""
        if not self.ciphered:
            return "plain"
        if self.security_control is not None and not self.security_control & 0x10:
            return "ciphered, no tag"
        return "ciphered, tag " + {True: "verified", None: "not verified", False: "FAILED"}[self.tag_verified]

    def render(self) -> str:
        """A readable multi-line form (MeterData.text, the CLI table)."""
        head = [f"push via {self.wrapper}, {self.protection()}"]
        if self.timestamp is not None:
            head.append(f"meter time {self.timestamp.isoformat()}")
        if self.profile:
            head.append(f"profile {self.profile}")
        if self.system_title:
            head.append(f"system title {self.system_title.hex().upper()}")
        lines = ["; ".join(head)]
        add = lines.append
        for r, (before, after, raw_note) in zip(self.readings, _line_parts(self.readings)):
            value = r.value
            if isinstance(value, Decimal):  # (_display's first case, without the call: most lines)
                add(before + decimal_text(value) + after)
            elif value is None and r.raw is not None:
                add(before + _display(r.raw) + raw_note + after)
            else:
                add(before + _display(value) + after)
        return "\n".join(lines)

    def to_meter_data(self, text: bool = True, received: Optional[float] = None) -> MeterData:
        """``text=False`` leaves MeterData.text empty for sinks that never show it (the Victron
        service): rendering costs more than mapping the values. ``received``: when the bytes
        came (the driver's clock); None: now."""
        return MeterData.of("push", self.readings, received, self.timestamp, self.meter_id,
                            self.render() if text else "", self.raw, self.profile, self.checksum, self)


class UnexplainedLayout(UnknownLayoutError):
    """Counted, not fatal: a positional frame no profile explained was delivered with positions only."""


def unknown_layout_error_for(msg: PushMessage) -> UnexplainedLayout:
    """The counted (not raised) error for a positional frame that no profile explained."""
    base = unknown_layout_error(len(msg.readings))
    return UnexplainedLayout(base.cause, base.fix)


#: the interpretations' notes noted so far (once per process each: a profile problem repeats with every frame)
_NOTED = Once(100)

#: messages with a tag that a published authentication key may fail before it is no longer tried
PUBLISHED_TRIES = 3


class PushDecoder:
    """Stateful decoder for one meter's byte stream (see the module docstring).

    ``on_error`` is called with every error (after counting); ``last_error`` keeps the last one.
    ``take_notes`` gives what the driver should log (module docstring).
    """

    def __init__(self, config: ListenerConfig, stats: Optional[Statistics] = None,
                 on_error: Optional[Callable[[DlmsError], None]] = None, max_buffer: int = 64 * 1024) -> None:
        self.config = config
        self.stats = stats if stats is not None else Statistics()
        self.on_error = on_error
        self.deframer = Deframer(config.wrapper, max_buffer)
        self.gbt = GbtAssembler(max_buffer)
        self.last_error: Optional[DlmsError] = None
        #: what the driver logs, (level name: "info" or "warning", text) each: ``take_notes``
        self.notes: List[Tuple[str, str]] = []
        #: listening starts in the middle of a message: the framing errors before the first good
        #: frame are that partial message, not a fault (logged at info, still counted), as long
        #: as they add up to no more than one message could be (beyond that it is a wrong line)
        self._joining = True
        self._joined_at = 0  # deframer.skipped when joining began
        self._lead_parts = 0  # framing errors of this join so far
        #: the first such framing error (the bytes before the first frame), once there was one
        self.lead_in: Optional[DlmsError] = None
        self._gbt_raw: List[bytes] = []
        self._gbt_joining = True  # no block 1 since listening began
        #: how long this meter pauses inside a message of several parts, doubled (``settle``): None
        #: until one was decoded; kept across reset() (the same meter)
        self.part_pause: Optional[float] = None
        self._pause = 0.0  # the longest quiet so far inside the message whose parts are pending
        self._pause_of = (0, 0)  # (deframer.started, gbt.started) of that message
        self._profiles = load_profiles()  # a broken profile file fails here, at start-up
        self._family: Optional[str] = None  # the family of this meter's last frame (Kaifa list 1)
        #: this meter's layouts (a meter may push several lists), learned from fully decoded frames,
        #: by APDU length and the family they were learned in
        self._templates: Dict[Tuple[int, Optional[str]], Template] = {}
        self._full_decodes = 0  # full decodes since the template last fitted
        self._learn_pause = 0  # frames before learning is tried again
        self._engine_said = False
        #: minimum protection and increasing invocation counters; kept across reset(): same meter
        self.policy = SecurityPolicy(getattr(config, "security", "auto"), config.key, config.auth_key)
        #: the authentication key tags are checked with: the configured one, or a published one
        #: (security.PUBLISHED_AUTH_KEYS) once this meter's tags verified with it
        self.auth_key = config.auth_key
        #: a published key still to try (name, key, tries left), only with a key and no auth_key
        self._published = (PUBLISHED_AUTH_KEYS[0] + (PUBLISHED_TRIES,)) if config.key and not config.auth_key else None
        known = dict(self._profiles)
        if config.profile not in (None, "", "auto"):
            from .profiles import resolve
            # (an unknown name fails at start-up too; a user file is not among the loaded profiles)
            known.update((p.name, p) for p in resolve(config.profile, self._profiles) or ())
        #: this meter's counters whose unit its lists do not state, per profile (scalecheck)
        self._scale_checks: Dict[Optional[str], ScaleCheck] = {
            name: ScaleCheck(name, p.scale_check) for name, p in known.items() if p.scale_check}
        #: fields whose scaler their possible range decides, per profile (scalecheck.RangeCheck)
        self._range_checks: Dict[Optional[str], RangeCheck] = {
            name: RangeCheck(name, p.range_check) for name, p in known.items() if p.range_check}

    # ------------------------------------------------------------------ public
    def take_notes(self) -> List[Tuple[str, str]]:
        """The notes since the last call, for the driver's log."""
        notes, self.notes = self.notes, []
        return notes

    def feed(self, chunk: bytes) -> List[PushMessage]:
        """Bytes in (any chunking), verified messages out; errors are counted, not raised."""
        if chunk:
            self.stats.count("bytes", len(chunk))
        out: List[PushMessage] = []
        for item in self.deframer.feed(chunk):
            self._item(item, out)
        return out

    def finish(self) -> List[PushMessage]:
        """End of the input (file, closed connection): count what remained incomplete."""
        out: List[PushMessage] = []
        for item in self.deframer.finish():
            self._item(item, out)
        dropped = self.gbt.reset("the input ended before the last block")
        self._gbt_raw = []
        if dropped:
            self._error(dropped)
        return out

    def settle(self, quiet: float = math.inf) -> List[PushMessage]:
        """The line has been quiet for ``quiet`` seconds (the caller's clock): messages that waited
        only to see whether a frame starting inside them would complete (``Deframer.settle``).

        A message whose segments or blocks stopped coming for longer than this meter pauses inside
        one (``allowed_pause``) is dropped, never joined to the next push's: HDLC UI segments,
        M-Bus telegrams and GBT blocks carry nothing that tells two pushes apart. Some meters do
        pause inside a message (an L+G E450 3 s before its last frame, esphome #16942), so until
        a message of several parts has shown how this meter sends them, a pause of up to
        ``PART_PAUSE_UNLEARNED`` is waited out."""
        allowed = self.allowed_pause()
        pending = self.deframer.pending_parts or self.gbt.pending
        give_up = quiet > allowed
        if give_up and math.isfinite(quiet):
            why = (f"the line was quiet for {quiet:.1f} s before its last {{}}, and this meter's messages "
                   + (f"pause for {self.part_pause / 2:.1f} s at most" if self.part_pause else "come without pauses")
                   + (": a later push's parts are never joined to it" if self.part_pause is not None else
                      f" (no message of several parts decoded yet: {allowed:g} s are waited out)"))
        else:
            why = "the line went quiet before its last {}: a later push's parts are never joined to it"
        out: List[PushMessage] = []
        for item in self.deframer.settle(why.format("segment") if give_up else None):
            self._item(item, out)
        if give_up:
            dropped = self.gbt.reset(why.format("block"))
            self._gbt_raw = []
            if dropped:
                self._error(dropped)
        elif pending:
            begun = (self.deframer.started, self.gbt.started)
            if begun != self._pause_of:  # (a pause noted for a message given up since is no pause of this)
                self._pause, self._pause_of = 0.0, begun
            self._pause = max(self._pause, quiet)
        return out

    def allowed_pause(self) -> float:
        """The longest quiet (s) inside a message of several parts before its parts are given up:
        twice the longest this meter can have made (``_parts_paused``), or, before
        it sent a message of several parts, ``PART_PAUSE_UNLEARNED``."""
        return PART_PAUSE_UNLEARNED if self.part_pause is None else self.part_pause

    def _parts_paused(self) -> None:
        """A message of several parts decoded: how long this meter pauses inside one (doubled, at
        most ``PART_PAUSE_MAX``), from the pause ``settle`` noted for this very message. That pause
        was up to ``SETTLE_EVERY`` longer than noted (a 3 s pause may be noted as 2.0 s): the bound
        doubles the longest it can have been, or a meter's next 3 s pause would be given up at 4 s."""
        pause = self._pause if self._pause_of == (self.deframer.started, self.gbt.started) else 0.0
        longest = pause + SETTLE_EVERY if pause > 0.0 else 0.0
        self.part_pause = min(PART_PAUSE_MAX, max(self.part_pause or 0.0, 2.0 * longest))
        self._pause = 0.0

    def reset(self) -> None:
        """Forget partial frames (the port was reopened: bytes were lost in between)."""
        self._joining = self._gbt_joining = True
        self._pause = 0.0
        self._joined_at = self.deframer.skipped
        self._lead_parts = 0
        self.deframer.reset()
        self.gbt.reset()
        self._gbt_raw = []

    # ---------------------------------------------------------------- pipeline
    def _item(self, item: Any, out: List[PushMessage]) -> None:
        if isinstance(item, DlmsError):
            self._error(item)
            self._reset_gbt("a frame was lost or damaged before the last block")
            return
        self.stats.count("frames", item.frames)
        self._joining = False
        is_gbt = item.apdu[:1] == bytes([GENERAL_BLOCK_TRANSFER])
        if is_gbt:
            if item.apdu[2:4] == b"\x00\x01":  # block 1 starts a new message
                self._gbt_raw = []
                self._gbt_joining = False
            self._gbt_raw.append(item.raw)
        for part in self.gbt.feed(item.apdu, item.source):
            if isinstance(part, DlmsError):
                # the blocks before the first block 1 are the tail of a message listening began in
                part.lead_in = part.lead_in or (is_gbt and self._gbt_joining)
                self._error(part)
                continue
            raw = item.raw
            if is_gbt:
                raw = b"".join(self._gbt_raw)
            self.stats.count("apdus")
            try:
                msg = self.decode_apdu(part, item.wrapper, raw, item.checksum)
            except DlmsError as exc:
                exc.link_check = item.checksum
                self._error(exc)
                continue
            if msg.unknown_layout:
                # still delivered (positions only, no OBIS codes, so no sink maps them), but counted
                self._error(unknown_layout_error_for(msg))
            self.stats.success("messages")
            out.append(msg)
            if item.frames > 1 or len(self._gbt_raw) > 1:  # a message of several parts: how the meter sends them
                self._parts_paused()
        if not self.gbt.pending:
            self._gbt_raw = []

    def decode_apdu(self, apdu: bytes, wrapper: str = "apdu", raw: bytes = b"",
                    link_check: Optional[str] = None) -> PushMessage:
        """One complete (possibly ciphered) APDU to a message; raises DlmsError on any failure.

        The security policy judges it last, once it decoded completely, so a damaged frame never
        moves the invocation counter or the learned security level.
        """
        published = self._published
        d = decipher(apdu, self.config.key, self.auth_key, published[1] if published else None)
        if d.ciphered:
            self.stats.count("decrypted")
            if not self._engine_said:  # the log says once which library deciphers (gcm.py chooses)
                self._engine_said = True
                self.notes.append(("info", f"deciphering AES-GCM with {gcm.engine().name}"))
        plain = d.apdu
        profile = self.config.profile if self.config.profile not in (None, "", "auto") else None
        if plain[:1] == b"/":
            interp = interpret_text(plain)
            timestamp = interp.timestamp
        elif plain[:1] == bytes([GENERAL_BLOCK_TRANSFER]):
            raise DecodeError("block transfer inside a ciphered APDU is not supported",
                              "report this meter with a raw capture (decode --hex)")
        else:
            template = self._templates.get((len(plain), self._family))
            fast = template.interpret(plain) if template is not None else None
            if fast is not None:
                interp, timestamp = fast
                self._full_decodes = 0
            else:
                notification = decode_apdu(plain)
                interp = interpret(notification, profile, profiles=self._profiles, family=self._family)
                timestamp = notification.timestamp
                for text in interp.notes:  # (a profile problem that repeats with every frame: once)
                    if _NOTED.first(text):
                        self.notes.append(("warning", text))
                self._learn(plain, notification, interp, profile)
        if not interp.readings:
            raise DecodeError("the push carries no values", "the meter sent an empty notification; nothing to do")
        note = self.policy.admit(d, timestamp)
        if note:
            self.notes.append(("warning", note))
        if published is not None and d.ciphered and (d.security_control or 0) & 0x10:
            self._judge_published(published, bool(d.tag_verified))
        if interp.family:
            self._family = interp.family
        readings = interp.readings  # (admitted: only a verified push may teach the counter check)
        check = self._scale_checks.get(interp.profile)
        if check is not None:
            readings, said = check.apply(tuple(readings), timestamp)
            self.notes.extend(said)
        ranged = self._range_checks.get(interp.profile)
        if ranged is not None:
            readings, said = ranged.apply(tuple(readings))
            self.notes.extend(said)
        return frozen_of(PushMessage, {
            "wrapper": wrapper, "ciphered": d.ciphered, "tag_verified": d.tag_verified, "timestamp": timestamp,
            "profile": interp.profile, "readings": tuple(readings), "apdu": plain, "raw": raw or bytes(apdu),
            "system_title": d.system_title, "serial": interp.meter_id, "unknown_layout": interp.unknown_layout,
            "link_check": link_check, "security_control": d.security_control,
            "invocation_counter": d.invocation_counter})

    def _judge_published(self, published: Tuple[str, bytes, int], verified: bool) -> None:
        """Adopt a published authentication key that verified this meter's tag: from now on every
        tag must verify, as with a configured one. A meter that uses its own key gets a few tries."""
        name, key, tries = published
        if verified:
            self.auth_key, self._published = key, None
            self.policy.minimum = max(self.policy.minimum, 2)
            self.notes.append(("info", f"the authentication tags verify with the published {name} authentication "
                                       "key: every tag is checked from now on"))
        else:
            self._published = (name, key, tries - 1) if tries > 1 else None

    def _learn(self, plain: bytes, notification: Any, interp: Any, profile: Optional[str]) -> None:
        """Learn the layout of a frame the full path decoded (template.py); a meter whose frames
        never repeat their layout stops being learned for a while (learning costs a walk)."""
        if self._learn_pause:
            self._learn_pause -= 1
            return
        self._full_decodes += 1
        if self._full_decodes > LEARN_TRIES:
            self._full_decodes = 0
            self._learn_pause = LEARN_PAUSE
            return
        template = learn(plain, notification, interp, self._profiles, profile, self._family)
        if template is not None:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.clear()
            self._templates[(len(plain), self._family)] = template

    # ------------------------------------------------------------------ errors
    def _reset_gbt(self, reason: str) -> None:
        dropped = self.gbt.reset(reason)
        self._gbt_raw = []
        if dropped:
            self._error(dropped)

    def _error(self, exc: DlmsError) -> None:
        self.stats.error(exc)
        self.last_error = exc
        joined = self._joining and isinstance(exc, FramingError) and not isinstance(exc, ChecksumError)
        if joined and self.deframer.skipped - self._joined_at > hdlc.MAX_FRAME:
            joined = self._joining = False  # more than the rest of one message: no lead-in any more
        if joined:
            # (a long lead-in fed in small pieces comes as several errors: the deframer reports
            # noise every NOISE_REPORT bytes, so the part before the first frame came unmarked)
            if self._lead_parts == 0:
                self.lead_in = exc
            self._lead_parts += 1
            exc.lead_in = True
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception as failure:  # a sink's bug must not stop decoding
                self.notes.append(("warning", f"the error callback failed on {type(exc).__name__}: {failure!r}"))


def decode_bytes(data: bytes, config: ListenerConfig, strict: bool = True,
                 stats: Optional[Statistics] = None) -> List[PushMessage]:
    """Decode a complete capture (hex input, a file of frames back to back).

    ``strict``: raise the first error that lost data (checksum, tag, key, decode, leftover
    bytes); a positional frame without a profile is not such an error (it is delivered with
    positions only and counted as ``unknown_layouts``). Otherwise return what decoded and
    count the rest in ``stats``.
    """
    errors: List[DlmsError] = []
    decoder = PushDecoder(config, stats, on_error=errors.append)
    messages = decoder.feed(data)
    messages += decoder.finish()
    lost = [e for e in errors if not isinstance(e, UnexplainedLayout)]
    if strict and lost:
        raise lost[0]
    return messages


__all__ = ["PushMessage", "PushDecoder", "decode_bytes", "json_value", "UnexplainedLayout"]
