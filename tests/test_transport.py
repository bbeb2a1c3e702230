"""transport.Transport over real pseudo-terminals and real TCP sockets (no mocks)."""
from __future__ import annotations

import os
import pwd
import select
import socket
import subprocess
import sys
import termios
import threading
import time
from typing import Callable, Optional

import pytest
import serial

from dlms_protocol.errors import ConfigurationError, TransportError
from dlms_protocol.simulator.pty import PARK_AFTER, PtyLink
from dlms_protocol.transport import PARITY_ERROR, Transport, bits_per_char


@pytest.fixture
def link():
    link = PtyLink(baudrate=300, time_scale=20)
    yield link
    link.close()


def test_bits_per_char():
    assert bits_per_char(7, "E", 1) == 10
    assert bits_per_char(8, "N", 1) == 10
    assert bits_per_char(8, "E", 1) == 11


def test_missing_port_says_how_to_fix():
    with pytest.raises(TransportError) as err:
        Transport.open("/dev/ttyUSB-does-not-exist", 300)
    text = str(err.value)
    assert "not found" in text and "/dev/serial/by-id/" in text
    assert err.value.stat == "transport_errors"


def test_empty_port_and_bad_url_are_configuration_errors():
    with pytest.raises(ConfigurationError):
        Transport.open("", 300)
    with pytest.raises(ConfigurationError):
        Transport.open("nosuchscheme://host:1", 300)
    with pytest.raises(ConfigurationError):
        Transport.open("/dev/null", 300, 7, "X", 1)


#: opens argv[1] as the user and group argv[2:4], after importing as root what opening uses (the
#: user may not read root's interpreter): prints what Transport says
_AS_USER = """
import os, sys
import serial, serial.serialposix
from dlms_protocol.errors import TransportError
from dlms_protocol.transport import Transport
os.setgid(int(sys.argv[3]))
os.setuid(int(sys.argv[2]))
try:
    Transport.open(sys.argv[1], 300).close()
    print("opened")
except TransportError as exc:
    print(exc)
"""


def test_permission_denied_names_the_dialout_group(link):
    """A real EACCES: a process that dropped to user 'nobody' opens a pty only root may open.
    (A child process, not a fork of this one: forking a process with threads may deadlock the child.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    os.chmod(link.port, 0o600)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", _AS_USER, link.port, str(nobody.pw_uid), str(nobody.pw_gid)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=root))
    text = done.stdout + done.stderr
    assert done.returncode == 0, text
    assert "permission denied" in text and "dialout" in text, text


def test_write_read_and_baud_switch_in_both_directions(link):
    with Transport.open(link.port, 300) as t:
        assert link.peer_baudrate() == 300
        t.write(b"/?!\r\n")
        assert link.receive(1.0) == b"/?!\r\n"
        t.set_baudrate(9600)
        assert t.baudrate == 9600
        assert link.peer_baudrate() == 9600  # what the reader set is what the line (termios) has
        link.baudrate = 9600
        assert link.send(b"\x02hello\x03")
        assert t.read(7, timeout=2.0) == b"\x02hello\x03"
        t.set_baudrate(300)
        assert link.peer_baudrate() == 300


def test_read_some_returns_at_once_and_times_out_empty(link):
    with Transport.open(link.port, 300) as t:
        assert t.read_some(100, timeout=0.05) == b""
        link.raw_write(link.encode(b"abc"))
        assert t.read_some(100, timeout=2.0) == b"abc"


def test_read_until_terminator_and_char_timeout(link):
    with Transport.open(link.port, 300) as t:
        link.raw_write(link.encode(b"/LGZ5ZMD\r\nrest"))
        assert t.read_until(b"\n", timeout=2.0) == b"/LGZ5ZMD\r\n"
        # 'rest' is there, the terminator never comes: the gap time-out ends it with what arrived
        assert t.read_until(b"\n", timeout=5.0, char_timeout=0.1) == b"rest"


def test_reset_input_drops_pending_bytes(link):
    with Transport.open(link.port, 300) as t:
        link.raw_write(link.encode(b"echo-and-noise"))
        deadline = time.monotonic() + 2
        while t.in_waiting < 14 and time.monotonic() < deadline:
            time.sleep(0.01)
        t.reset_input()
        assert t.read_some(10, timeout=0.05) == b""


def test_drain_waits_for_the_wire_time(link):
    """tcdrain on a pty returns at once; drain() still waits the characters' time on the wire."""
    with Transport.open(link.port, 300) as t:
        t.time_scale = 4.0
        data = b"\x00" * 30   # 30 chars * 10 bits / 300 Bd / 4 = 0.25 s
        start = time.monotonic()
        t.write(data)
        t.drain()
        assert time.monotonic() - start >= 30 * 10 / 300 / 4 - 0.005


def test_port_vanishing_mid_read_is_a_transport_error(link):
    t = Transport.open(link.port, 300)
    try:
        link.close()  # the other end disappears, as a USB adapter that is pulled out
        with pytest.raises(TransportError) as err:
            t.read_some(10, timeout=2.0)
        assert "check the cable" in str(err.value)
    finally:
        t.close()


def test_a_local_port_is_read_straight_from_its_descriptor_with_pyserials_rules(link):
    """One read hands over everything buffered (up to max_bytes), an empty line reads as b"" even
    without waiting, and a port that vanished is an error on that zero-wait read too (a drain)."""
    t = Transport.open(link.port, 9600, 8, "N", 1)
    try:
        assert t._direct is not None and t._direct[0] == t._port.fd and t.reads_all_buffered
        assert t.read_some(100, timeout=0) == b""
        link.raw_write(bytes(range(200)))
        deadline = time.monotonic() + 5
        while t.in_waiting < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert t.read_some(150, timeout=0) == bytes(range(150))
        assert t.read_some(4096, timeout=0) == bytes(range(150, 200))
        link.close()
        with pytest.raises(TransportError):
            t.read_some(10, timeout=0)
    finally:
        t.close()


def test_close_from_another_thread_ends_a_blocking_read(link):
    t = Transport.open(link.port, 300)
    outcome = {}

    def reader():
        try:
            outcome["data"] = t.read_some(10, timeout=None)  # would block forever
        except TransportError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.1)
    t.close()
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), TransportError)
    assert not t.is_open
    t.close()  # twice is fine
    with pytest.raises(TransportError):
        t.write(b"x")


def test_socket_url_works_and_refused_connection_is_explained():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        with Transport.open(f"socket://127.0.0.1:{port}", 9600, 8, "N", 1) as t:
            assert t._direct is None and not t.reads_all_buffered  # a socket reads through pyserial
            conn, _ = server.accept()
            with conn:
                t.write(b"ping")
                assert conn.recv(4) == b"ping"
                conn.sendall(b"pong")
                assert t.read(4, timeout=2.0) == b"pong"
    finally:
        server.close()
    with pytest.raises(TransportError) as err:
        Transport.open(f"socket://127.0.0.1:{port}", 9600)
    assert "refused" in str(err.value) or "cannot connect" in str(err.value)


# ------------------------------------------------------------------ parity in software (7E1)
def _ones(byte: int) -> int:
    return bin(byte).count("1")


def _read_master(link: PtyLink, n: int, timeout: float = 2.0) -> bytes:
    """The bytes the reader's UART put on the line, read from the pty master undecoded."""
    out = bytearray()
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        ready, _, _ = select.select([link.master], [], [], 0.05)
        if ready:
            out += os.read(link.master, 4096)
    return bytes(out)


@pytest.mark.parametrize("parity,ones", [("E", 0), ("O", 1)])
def test_7e1_characters_leave_as_8n1_bytes_with_the_parity_bit_in_bit_7(parity, ones):
    """A pty keeps no parity setting, so what the reader writes is what an 8N1 UART would put on
    the wire: every character (NUL wake-up, sign-on, ACK, anything) must carry its parity bit."""
    link = PtyLink(baudrate=300, parity=parity, time_scale=20)
    try:
        with Transport.open(link.port, 300, 7, parity, 1) as t:
            assert t.software_parity and t.char_time == pytest.approx(10 / 300)  # still a 7E1 line
            t.time_scale = 20
            chars = bytes(range(128))
            t.write(chars)
            wire = _read_master(link, len(chars))
    finally:
        link.close()
    assert len(wire) == 128
    assert bytes(b & 0x7F for b in wire) == chars
    assert all(_ones(b) % 2 == ones for b in wire), [hex(b) for b in wire if _ones(b) % 2 != ones]
    if parity == "E":
        assert wire[ord("/")] == 0xAF and wire[0] == 0x00 and wire[6] == 0x06  # '/', NUL, ACK


def test_received_characters_with_a_parity_error_never_reach_the_reader(link):
    """Each 7-bit character arrives once with the right parity bit and once with a bit flipped
    (data bit 0, or the parity bit itself): only the first comes through as a character."""
    good = bytes(c | (_ones(c) & 1) << 7 for c in range(128))
    flipped = bytes((b ^ 0x01) if i % 2 else (b ^ 0x80) for i, b in enumerate(good))
    with Transport.open(link.port, 300) as t:
        link.raw_write(good + flipped)
        got = t.read(256, timeout=2.0)
        assert t.parity_errors == 128
    assert got[:128] == bytes(range(128))
    assert got[128:] == bytes([PARITY_ERROR]) * 128


def test_socket_urls_pass_bytes_unchanged_the_remote_end_sets_the_format():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        with Transport.open(f"socket://127.0.0.1:{server.getsockname()[1]}", 300) as t:  # 7E1
            assert not t.software_parity
            conn, _ = server.accept()
            with conn:
                t.write(b"/?!\r\n")
                assert conn.recv(5) == b"/?!\r\n"
                conn.sendall(b"\xaf")
                assert t.read(1, timeout=2.0) == b"\xaf"
    finally:
        server.close()


# ------------------------------------------------------- close() while a UART drains its output
class UartThatDrains(serial.Serial):
    """pyserial on a real pty plus the one thing a pty does not do like a real UART: tcdrain
    (``flush``) returns only once the written characters have left the wire at the baud rate,
    or, with ``stuck``, only after that many seconds (an adapter stalled by flow control)."""

    def __init__(self, *args, stuck: float = 0.0, **kw) -> None:
        self.wire_free = 0.0
        self.stuck = stuck
        self.written = 0
        super().__init__(*args, **kw)

    def write(self, data) -> int:
        n = super().write(data)
        self.written += n
        self.wire_free = max(time.monotonic(), self.wire_free) + n * 10 / self.baudrate
        return n

    def flush(self) -> None:
        super().flush()
        time.sleep(max(self.stuck, self.wire_free - time.monotonic(), 0.0))


def _uart_transport(link: PtyLink, **kw) -> "tuple[Transport, UartThatDrains]":
    port = UartThatDrains(link.port, 300, bytesize=8, parity="N", timeout=0, **kw)
    return Transport(port, link.port, 7, "E", 1, software_parity=True), port


def _run_then_close(t: Transport, port: UartThatDrains, work,
                    settle: float) -> "tuple[float, dict, threading.Thread]":
    """Run ``work`` in a thread; once it wrote and ``settle`` s passed, time ``t.close()``."""
    outcome: dict = {}

    def run():
        try:
            work()
            outcome["done"] = True
        except TransportError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while not port.written and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(settle)
    start = time.monotonic()
    t.close()
    return time.monotonic() - start, outcome, thread


def test_close_returns_at_once_during_the_wakeup_nuls_of_a_real_uart(link):
    """66 NULs at 300 Bd are 2.2 s on the wire. close() must neither wait for them (the I/O
    lock) nor leave the reading thread stuck in tcdrain: the write goes out in short chunks."""
    t, port = _uart_transport(link)
    elapsed, outcome, thread = _run_then_close(t, port, lambda: (t.write(b"\x00" * 66), t.drain()), 0.3)
    thread.join(1.5)  # liveness bounds, far above the ~0.2 s it takes
    assert elapsed < 1.0
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), TransportError)
    assert not port.is_open
    assert 0 < port.written < 66  # stopped between two chunks


def test_close_does_not_wait_for_a_stuck_drain_the_drain_closes_the_port(link):
    t, port = _uart_transport(link, stuck=2.0)
    elapsed, outcome, thread = _run_then_close(t, port, lambda: (t.write(b"/?!\r\n"), t.drain()), 0.2)
    assert elapsed < 1.0
    assert port.is_open  # still inside tcdrain: closing it under the call would be unsafe
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), TransportError)
    assert not port.is_open


def _wait_buffered(t: Transport, n: int) -> None:
    deadline = time.monotonic() + 5
    while t.in_waiting < n and time.monotonic() < deadline:
        time.sleep(0.005)


def test_a_waiting_read_with_min_bytes_wakes_only_when_that_many_are_there(link):
    """The kernel holds the wake-up (VMIN) until min_bytes are buffered, then one call hands over
    all of them (Linux gives at most 64 bytes per read while VMIN is above 64); fewer bytes come
    after the time-out, and an empty line still reads as b"" (not as a vanished port)."""
    t = Transport.open(link.port, 9600, 8, "N", 1)
    try:
        link.raw_write(bytes(10))
        _wait_buffered(t, 10)
        start = time.monotonic()
        assert t.read_some(4096, timeout=0.3, min_bytes=185) == bytes(10)
        assert time.monotonic() - start >= 0.25  # 10 < 185: not woken before the time-out
        assert t.read_some(4096, timeout=0.05, min_bytes=185) == b""  # empty: no error

        frame = bytes(range(185))
        got = {}

        def reader() -> None:
            got["data"] = t.read_some(4096, timeout=5.0, min_bytes=185)
            got["at"] = time.monotonic()

        thread = threading.Thread(target=reader)
        thread.start()
        time.sleep(0.05)
        link.raw_write(frame[:100])
        time.sleep(0.3)
        assert thread.is_alive()  # 100 of 185 bytes: still waiting
        sent_rest = time.monotonic()
        link.raw_write(frame[100:])
        thread.join(5)
        assert got["data"] == frame and got["at"] >= sent_rest  # all 185 bytes in one call
        assert t.read_some(4096, timeout=0) == b""  # drained: an empty non-blocking read
    finally:
        t.close()


def test_after_a_baud_switch_an_empty_read_is_not_taken_for_a_vanished_port(link):
    """pyserial writes VMIN 0 again when it re-programs the port; with VMIN 0 an empty line reads
    0 bytes like a hung-up one, so the transport must know and ask select again."""
    t = Transport.open(link.port, 9600, 8, "N", 1)
    try:
        assert t.read_some(4096, timeout=0.05, min_bytes=100) == b""
        t.set_baudrate(19200)
        assert t.read_some(4096, timeout=0) == b""
        assert t.read_some(4096, timeout=0.05) == b""
        link.baudrate = 19200
        link.raw_write(b"abc")
        _wait_buffered(t, 3)
        assert t.read_some(4096, timeout=0, min_bytes=50) == b"abc"  # a read that does not wait: what is there
    finally:
        t.close()


def test_a_read_that_does_not_wait_finds_bytes_without_a_select(link, monkeypatch):
    """The listener reads a push it slept through with a read that does not wait: one system
    call when the bytes are there (a select in front of it cost one per push); an empty line
    still reads as empty, not as a vanished port."""
    import dlms_protocol.transport as transport_module

    t = Transport.open(link.port, 9600, 8, "N", 1)
    try:
        link.raw_write(b"frame")
        _wait_buffered(t, 5)
        calls = []
        real = transport_module.select.select

        def counting(*args):
            calls.append(args)
            return real(*args)

        monkeypatch.setattr(transport_module.select, "select", counting)
        assert t.read_some(4096, timeout=0) == b"frame"
        assert calls == []
        assert t.read_some(4096, timeout=0) == b""  # empty: asked select, which says not readable
        assert len(calls) == 1
    finally:
        t.close()


def test_a_port_that_vanished_is_an_error_for_a_read_that_does_not_wait(link):
    t = Transport.open(link.port, 9600, 8, "N", 1)
    try:
        assert t.read_some(4096, timeout=0) == b""
        link.close()
        with pytest.raises(TransportError):
            t.read_some(4096, timeout=0)
    finally:
        t.close()


def test_a_port_that_vanishes_during_a_read_with_min_bytes_is_an_error(link):
    t = Transport.open(link.port, 9600, 8, "N", 1)
    try:
        assert t.read_some(4096, timeout=0.05, min_bytes=100) == b""
        link.close()
        with pytest.raises(TransportError):
            t.read_some(4096, timeout=2.0, min_bytes=100)
    finally:
        t.close()


@pytest.mark.parametrize("call", ["sleep", "read_after"])
def test_sleep_on_a_local_port_ends_when_another_thread_closes_it(link, call):
    """``sleep`` and ``read_after`` (a sleep with the read after it) end at once with an error
    when another thread closes the port: the listener's stop() must not wait for a push."""
    t = Transport.open(link.port, 9600, 8, "N", 1)
    start = time.monotonic()
    getattr(t, call)(0.05)
    assert time.monotonic() - start >= 0.045
    outcome = {}

    def sleeper() -> None:
        try:
            outcome["returned"] = getattr(t, call)(30)
        except TransportError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.1)
    closed_at = time.monotonic()
    t.close()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - closed_at < 1.0
    assert isinstance(outcome.get("error"), TransportError) and "returned" not in outcome


def test_read_after_sleeps_then_returns_what_came_meanwhile_as_a_read_would(link):
    """The listener sleeps through a push and reads it in the same call: the bytes that came
    during the sleep, parity checked as ``read_some`` checks it; an empty line reads empty."""
    good = bytes(c | (_ones(c) & 1) << 7 for c in b"/ISK5MT382")
    with Transport.open(link.port, 300) as t:  # 7E1: the parity bit is checked here
        assert t.reads_all_buffered and t.read_after(0.01) == b""
        timer = threading.Timer(0.05, link.raw_write, (good[:4] + bytes([good[4] ^ 0x80]) + good[5:],))
        timer.start()
        start = time.monotonic()
        got = t.read_after(0.3)
        timer.join()
        assert time.monotonic() - start >= 0.29  # slept the whole time, though bytes came at 0.05 s
        assert got == b"/ISK" + bytes([PARITY_ERROR]) + b"MT382" and t.parity_errors == 1
        assert t.read_after(0) == b""


def test_read_after_on_a_socket_sleeps_and_reads_through_pyserial():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        with Transport.open(f"socket://127.0.0.1:{server.getsockname()[1]}", 9600, 8, "N", 1) as t:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"push")
                start = time.monotonic()
                got = t.read_after(0.1)  # (pyserial's socket hands out what it has, maybe a part)
                assert got and time.monotonic() - start >= 0.09
                assert got + t.read(4 - len(got), timeout=1.0) == b"push"
    finally:
        server.close()


def _closed_and_parked(link: PtyLink) -> None:
    """Let the link see its reader gone and, ``PARK_AFTER`` later, park the slave."""
    assert link.receive(0.01) == b"" and not link.connected
    time.sleep(PARK_AFTER)
    assert link.receive(0.01) == b"" and not link.connected


def test_a_parked_line_opens_again_with_hardware_parity_at_the_same_rate():
    """What the park is for: pyserial asking a pty for the 7E1 (or 8E1) it already has, at the same
    rate, fails with EINVAL (the pty cannot keep the parity bit, so nothing would change)."""
    link = PtyLink(baudrate=300, bytesize=7, parity="E")
    try:
        for _ in range(3):
            port = serial.Serial(link.port, 300, bytesize=7, parity="E", timeout=0)
            assert link.receive(0.01) == b"" and link.connected
            port.close()
            _closed_and_parked(link)
        assert link.peer_baudrate() == 38400
    finally:
        link.close()


def test_a_reader_that_reopens_before_the_park_keeps_its_rate():
    """The link parks a closed slave at 38400 Bd (see ``simulator.pty``). A poller that falls back
    to the readout re-opens the port at once; under load it opened and configured the port between
    the simulator's read that saw it closed and the park, so its sign-on was read at 38400 Bd as
    garbage (a CI failure of test_poll_pty's mode C fallback, 4 in 200 re-opens under load here).
    A reader back within ``PARK_AFTER`` is never parked; one the park finds back is left alone."""
    link = PtyLink(baudrate=300, bytesize=8, parity="N")
    try:
        port = serial.Serial(link.port, 9600, timeout=0)
        assert link.receive(0.01) == b"" and link.connected
        port.close()
        assert link.receive(0.01) == b"" and not link.connected   # the closed slave, not parked yet
        assert link.peer_baudrate() == 9600
        port = serial.Serial(link.port, 300, timeout=0)               # the reader is back at once
        time.sleep(PARK_AFTER)
        assert link.receive(0.01) == b"" and link.connected
        assert link.peer_baudrate() == 300
        link._park()                                                  # a park that came late
        assert link.peer_baudrate() == 300
        assert [e[1] for e in link.events].count("park-skipped") == 1
        port.write(b"/?!\r\n")
        assert link.receive(1.0) == b"/?!\r\n"
        port.close()
    finally:
        link.close()


class _ReaderDuringThePark(PtyLink):
    """A link whose reader runs ``reader()`` right after the park is written (``_park``'s check
    of the slave after the write), as a reader thread that takes the GIL there does."""

    reader: Optional[Callable[[], None]] = None

    def _slave_closed(self) -> bool:
        closed = super()._slave_closed()
        if closed and self.reader is not None and termios.tcgetattr(self.master)[4] == termios.B38400:
            reader, self.reader = self.reader, None
            reader()
            return super()._slave_closed()
        return closed


@pytest.mark.parametrize("configures", [False, True])
def test_a_reader_that_opens_during_the_park_keeps_its_rate(configures):
    """A poller's next session opened the port right after the park was written. If it had set its
    rate by then, the park's undo must leave that rate (the undo put back the closed reader's 9600
    Bd: a mode E sign-on then went out at 9600 Bd 60 times, a CI failure of test_poll_pty); if not,
    the undo puts back the settings from before, and the reader's own open sets its rate."""
    link = _ReaderDuringThePark(baudrate=300, bytesize=8, parity="N")
    opened = []
    try:
        port = serial.Serial(link.port, 9600, timeout=0)
        assert link.receive(0.01) == b"" and link.connected

        def reader() -> None:
            fd = os.open(link.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            opened.append(fd)
            if configures:
                attrs = termios.tcgetattr(fd)
                attrs[2] &= ~termios.CSTOPB
                attrs[4] = attrs[5] = termios.B300
                termios.tcsetattr(fd, termios.TCSANOW, attrs)

        link.reader = reader
        port.close()
        _closed_and_parked(link)
        assert opened and link.reader is None  # the reader came in the park
        assert [e[1] for e in link.events].count("park-undone") == 1
        assert link.peer_baudrate() == (300 if configures else 9600)
    finally:
        for fd in opened:
            os.close(fd)
        link.close()


def test_a_device_watch_sees_a_node_that_came_back_once(tmp_path) -> None:
    """Absent, then there: back once. Made anew (another inode, as udev makes a replugged
    adapter's node): back once more. A node that stays, a URL: never."""
    import os
    import threading

    from dlms_protocol.ratelimit import Backoff
    from dlms_protocol.transport import DeviceWatch

    node = tmp_path / "ttyUSB0"
    watch = DeviceWatch(str(node))
    assert not watch.back()
    node.write_bytes(b"")
    assert watch.back() and not watch.back()
    fresh = tmp_path / "ttyUSB0.new"
    fresh.write_bytes(b"")
    os.replace(fresh, node)  # (both existed at once: another inode)
    assert watch.back() and not watch.back()
    node.unlink()
    assert not watch.back()
    url = DeviceWatch("socket://127.0.0.1:1")
    assert url.path is None and not url.back()
    # a pause ends when the node comes back, and at once when stopped
    stop = threading.Event()
    threading.Timer(0.3, node.write_bytes, (b"",)).start()
    backoff = Backoff(30.0, 120.0)
    backoff.next()  # (60 s the next time)
    assert DeviceWatch(str(node)).pause(backoff, stop.wait)
    assert backoff.delay == 30.0  # (started over for the new device)
    stop.set()
    assert not DeviceWatch(str(tmp_path / "absent")).pause(Backoff(60.0, 60.0), stop.wait)
