"""Property tests: any register the meter model holds is polled with the right value, scaler and unit;
the simulated meter's parsers survive any bytes; user-written codes and system titles parse or fail cleanly.

The round trip runs gurux's real client against our real server through an in-memory line (the
pty and TCP tests cover the real lines; here hypothesis needs hundreds of polls).
"""
from __future__ import annotations

from decimal import Decimal
from typing import List

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlms_protocol.dlms.units import symbol
from dlms_protocol.errors import ConfigurationError
from dlms_protocol.poll.config import PollConfig, parse_code, parse_system_title
from dlms_protocol.poll.poller import DlmsPoller, physical
from dlms_protocol.simulator.cosem_model import MeterModel, RegisterSpec
from dlms_protocol.simulator.dlms_server import CosemServer, HdlcServer, WrapperServer, default_accounts

_TYPES = {"double-long-unsigned": (0, 2**32 - 1), "double-long": (-2**31, 2**31 - 1), "long-unsigned": (0, 65535),
          "long": (-32768, 32767), "long64": (-2**63, 2**63 - 1)}
UNITS = [27, 28, 29, 30, 31, 32, 33, 35, 44, 255]


class Line:
    """An in-memory line between the poller's session and a server link (what the opener hands out)."""

    def __init__(self, server) -> None:
        self.server = server
        self.rx = bytearray()
        self.time_scale = 1.0
        self.closed = False

    def write(self, data: bytes) -> None:
        for frame in self.server.feed(bytes(data)):
            self.rx += frame

    def read_some(self, max_bytes: int = 4096, timeout=None) -> bytes:
        chunk, self.rx = bytes(self.rx[:max_bytes]), self.rx[max_bytes:]
        return chunk

    def close(self) -> None:
        self.closed = True


@st.composite
def registers(draw) -> List[RegisterSpec]:
    n = draw(st.integers(1, 12))
    out = []
    for i in range(n):
        kind = draw(st.sampled_from(sorted(_TYPES)))
        lo, hi = _TYPES[kind]
        out.append(RegisterSpec(f"1.0.{1 + i}.{draw(st.integers(0, 9))}.0.255", draw(st.integers(lo, hi)),
                                draw(st.integers(-6, 6)), draw(st.sampled_from(UNITS)),
                                class_id=draw(st.sampled_from([3, 4, 5])), value_type=kind))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(regs=registers(), hdlc=st.booleans(), max_info=st.sampled_from([32, 64, 128, 251]),
       max_pdu=st.sampled_from([64, 128, 512, 1024]))
def test_every_register_is_polled_with_its_scaler_and_unit(regs, hdlc, max_info, max_pdu):
    model = MeterModel(registers=regs)
    app = CosemServer(model, default_accounts(), max_pdu=max_pdu)
    server = HdlcServer(app, max_info=max_info) if hdlc else WrapperServer(app)
    config = PollConfig("/dev/null" if hdlc else "tcp://meter:4059", max_info=max_info)
    line = Line(server)
    poller = DlmsPoller(config, opener=lambda url, rate: line)
    data = poller.read(discover=True)
    for reg in regs:
        code = "1-0:" + ".".join(reg.ln.split(".")[2:5]) + ".255"
        reading = next(r for r in data.readings if r.code == code)
        assert reading.value == Decimal(reg.value).scaleb(reg.scaler)
        assert reading.scaler == reg.scaler and reading.unit == symbol(reg.unit)
    assert line.closed and not server.feed(b"")  # released and disconnected, nothing left to say


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_the_simulated_meter_survives_any_bytes(data, hdlc):
    app = CosemServer(MeterModel(registers=[RegisterSpec("1.0.1.8.0.255", 1, 0, 30)]))
    server = HdlcServer(app) if hdlc else WrapperServer(app)
    for frame in server.feed(data):
        assert frame[:1] in (b"\x7e", b"\x00")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_any_apdu_in_an_association_gets_an_answer_or_none(apdu):
    app = CosemServer(MeterModel(registers=[RegisterSpec("1.0.1.8.0.255", 1, 0, 30)]))
    app.client, app.associated = 16, True
    answer = app.handle(b"\xC0" + apdu, 16)
    assert answer is None or answer[:1] in (b"\xC4", b"\xD8")


@given(st.lists(st.integers(0, 255), min_size=6, max_size=6))
def test_gurux_dotted_logical_names_parse(groups):
    code = parse_code(".".join(map(str, groups)))
    assert list(code.groups) == groups


@given(st.text(max_size=20))
def test_system_title_is_8_bytes_or_a_clear_error(text):
    try:
        title = parse_system_title(text)
    except ConfigurationError as exc:
        assert "8" in exc.cause and exc.fix
    else:
        assert len(title) == 8


@given(st.integers(-2**63, 2**64), st.integers(-10, 10))
def test_physical_value_is_exact(raw, scaler):
    assert physical(raw, scaler) == Decimal(raw) * Decimal(10) ** scaler


class NoisyLine(Line):
    """The in-memory line with one bit flipped in what the meter sends (at byte ``at`` of the session)."""

    def __init__(self, server, at: int, bit: int) -> None:
        super().__init__(server)
        self.at, self.bit, self.sent = at, bit, 0

    def write(self, data: bytes) -> None:
        for frame in self.server.feed(bytes(data)):
            frame = bytearray(frame)
            if self.sent <= self.at < self.sent + len(frame):
                frame[self.at - self.sent] ^= 1 << self.bit
            self.sent += len(frame)
            self.rx += frame


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at=st.integers(0, 1500), bit=st.integers(0, 7))
def test_a_flipped_bit_on_the_line_never_becomes_a_wrong_value(at, bit):
    """HDLC's FCS guards every answer: a damaged one is an error (and the session ends), never a value."""
    from dlms_protocol.errors import DlmsError

    model = MeterModel(registers=[RegisterSpec("1.0.1.8.0.255", 12345678, -3, 32),
                                  RegisterSpec("1.0.32.7.0.255", 2301, -1, 35, value_type="long-unsigned")])
    line = NoisyLine(HdlcServer(CosemServer(model, default_accounts())), at, bit)
    poller = DlmsPoller(PollConfig("/dev/null", timeout=0.05), opener=lambda url, rate: line)
    try:
        data = poller.read(discover=True)
    except DlmsError:
        return
    assert data.get("1.8.0").value == Decimal("12345.678") and data.get("1.8.0").unit == symbol(32)
    assert data.get("32.7.0").value == Decimal("230.1") and data.get("32.7.0").unit == "V"
