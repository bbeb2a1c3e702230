"""transport.Transport over real pseudo-terminals and real TCP sockets (no mocks)."""
from __future__ import annotations

import os
import pwd
import socket
import threading
import time
import pytest

from dlms_protocol.errors import ConfigurationError, TransportError
from dlms_protocol.simulator.pty import PtyLink
from dlms_protocol.transport import Transport, bits_per_char


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


def test_permission_denied_names_the_dialout_group(link):
    """A real EACCES: a forked child that dropped to user 'nobody' opens a pty only root may open."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    os.chmod(link.port, 0o600)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on, always leave with os._exit
        message = b"opened"
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            Transport.open(link.port, 300).close()
        except TransportError as exc:
            message = str(exc).encode()
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            message = repr(exc).encode()
        os.write(w, message)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        text = fh.read().decode()
    os.waitpid(pid, 0)
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
        link.raw_write(b"abc")
        assert t.read_some(100, timeout=2.0) == b"abc"


def test_read_until_terminator_and_char_timeout(link):
    with Transport.open(link.port, 300) as t:
        link.raw_write(b"/LGZ5ZMD\r\nrest")
        assert t.read_until(b"\n", timeout=2.0) == b"/LGZ5ZMD\r\n"
        # 'rest' is there, the terminator never comes: the gap time-out ends it with what arrived
        assert t.read_until(b"\n", timeout=5.0, char_timeout=0.1) == b"rest"


def test_reset_input_drops_pending_bytes(link):
    with Transport.open(link.port, 300) as t:
        link.raw_write(b"echo-and-noise")
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
