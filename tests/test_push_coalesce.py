"""Coalesced reads in the push listener: the length fields that decide how long it waits, and
that waiting never changes what is decoded (bytes in pieces, a port that goes away mid-frame)."""
from __future__ import annotations

import threading
from typing import List, Optional

from hypothesis import given, settings
from hypothesis import strategies as st

from dlms_protocol.config import ListenerConfig
from dlms_protocol.dlms.listener import PushListener, frame_length, missing_bytes
from dlms_protocol.errors import TransportError
from dlms_protocol.model import MeterData
from dlms_protocol.simulator.push import PushSimulator

EK = bytes.fromhex("0F0E0D0C0B0A09080706050403020100")
AK = bytes.fromhex("A0A1A2A3A4A5A6A7A8A9AAABACADAEAF")


def frames(wrapper: str, seed: int, segmented: bool = False, counter: int = 1) -> bytes:
    """One push as the simulated meter sends it (one frame, or several HDLC segments / M-Bus telegrams)."""
    sim = PushSimulator(wrapper=wrapper, key=EK, auth_key=AK, security=0x30, seed=seed, segmented=segmented,
                        max_info=90, invocation_counter=counter)
    return sim.emit()


def split(stream: bytes) -> List[bytes]:
    """The frames of a push, cut where their length fields say."""
    out = []
    while stream:
        length = frame_length(stream)
        assert length is not None and 0 < length <= len(stream)
        out.append(stream[:length])
        stream = stream[length:]
    return out


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["hdlc", "mbus"]), st.booleans(), st.integers(0, 1000), st.data())
def test_length_fields_announce_each_frame(wrapper, segmented, seed, data):
    stream = frames(wrapper, seed, segmented)
    parts = split(stream)
    assert b"".join(parts) == stream
    assert missing_bytes(stream) == 0
    for frame in parts:
        assert missing_bytes(frame) == 0
        cut = data.draw(st.integers(1, len(frame) - 1))
        need = missing_bytes(frame[:cut])
        assert need is not None and 0 < need <= len(frame) - cut  # never more than the frame still has
        if cut >= 4:
            assert need == len(frame) - cut and frame_length(frame[:cut]) == len(frame)


@given(st.binary(max_size=40))
def test_noise_has_no_length(noise):
    got = frame_length(noise)
    assert got is None or got >= 3  # never a length shorter than its own header


class PiecePort:
    """A port that hands out a frame in the given pieces, one per read, then fails (unplugged)."""

    def __init__(self, pieces: List[bytes]) -> None:
        self.pieces = list(pieces)
        self.closed = threading.Event()

    def read_some(self, max_bytes: int = 4096, timeout: Optional[float] = None) -> bytes:
        if self.pieces:
            return self.pieces.pop(0)
        raise TransportError("port gone", "plug it in")

    def close(self) -> None:
        self.closed.set()


def run_listener(pieces: List[bytes]) -> List[MeterData]:
    got: List[MeterData] = []
    ports = [PiecePort(pieces)]
    done = threading.Event()

    def opener(_cfg):
        if not ports:
            done.set()
            raise TransportError("no port", "plug it in")
        return ports.pop()

    lst = PushListener(ListenerConfig(port="/dev/fake", key=EK, auth_key=AK, baudrate=115200), got.append,
                       opener=opener, backoff_initial=0.01, backoff_max=0.01)
    lst.start()
    assert done.wait(30)
    lst.stop()
    return got


def test_bytes_read_before_the_port_went_away_are_decoded():
    frame = frames("hdlc", 7)
    # one byte, then the rest in small pieces, then the port fails while the frame is complete
    pieces = [frame[:1]] + [frame[i:i + 5] for i in range(1, len(frame), 5)]
    got = run_listener(pieces)
    assert len(got) == 1 and got[0].readings


def test_a_frame_in_single_bytes_is_decoded_once_each_time():
    stream = frames("hdlc", 8, counter=1) + frames("hdlc", 9, counter=2) + frames("mbus", 10, counter=3)
    got = run_listener([stream[i:i + 1] for i in range(len(stream))])
    assert len(got) == 3
