"""Optical port mode E (IEC 62056-21 Annex E): from the 300 Bd sign-on to an 8N1 HDLC line.

The sign-on reuses the D0 client's pieces (request, identification parser, acknowledgement,
rate choice); only the acknowledgement differs: ``ACK 2 Z 2`` (HDLC procedure, binary mode).
The port stays 8N1 all the time and the 7E1 characters of the sign-on get their parity bit
in software (``transport.add_parity``/``check_parity``), so nothing has to re-program the
character format at the switch, only the rate.
"""
from __future__ import annotations

import logging
import time

from ..errors import IdentificationError, NoResponseError, ProtocolError
from ..iec62056_21.client import (REACTION_TIME, SHORT_REACTION_TIME, acknowledgement, choose_rate,
                                  sign_on_request)
from ..iec62056_21.identification import Identification, parse_identification
from ..transport import Transport, add_parity, check_parity
from .config import PollConfig

log = logging.getLogger(__name__)


class ModeERefused(ProtocolError):
    """The meter's identification does not offer mode E (no ``\\2``): it only has the readout."""

    stat = "mode_e_refused"

    def __init__(self, identification: Identification) -> None:
        self.identification = identification
        super().__init__(f"meter {identification.raw} does not offer mode E (HDLC) on its optical port",
                         "read it with the mode C readout (the read command; poll and the plugin fall back to it "
                         "unless fallback_readout is off), or poll it on its RS485/TCP port")


#: the longest a meter may take to answer a request (IEC 62056-21: tr at most 1.5 s)
MAX_REACTION_TIME = 1.5


def _identification(transport: Transport, config: PollConfig, request: bytes,
                    time_scale: float = 1.0) -> Identification:
    """Read lines until one is an identification (echoes of ``/?!`` are skipped).

    A meter that heard nothing of the request (a request lost on the line, a meter still closing
    its previous session) never answers: when no byte came for the longest reaction time, the
    request goes out again, until ``identification_timeout``.
    """
    start = time.monotonic()
    deadline = start + config.identification_timeout
    patience = MAX_REACTION_TIME / time_scale
    resend_at = start + patience
    echoes = resent = 0
    pending = bytearray()  # a line that began before a read's time ran out
    while True:
        now = time.monotonic()
        remaining = deadline - now
        if remaining <= 0:
            hint = " (the IR head echoes the sign-on, so the port works)" if echoes else ""
            again = f", the request sent {resent + 1} times" if resent else ""
            raise NoResponseError(f"no answer to the mode E sign-on within {config.identification_timeout:g} s"
                                  f"{again}{hint}",
                                  "check the optical head's position on the meter and the port; a meter on "
                                  "RS485 or TCP needs no sign-on (mode_e off)")
        if now >= resend_at:
            log.debug("no answer to the sign-on for %.2f s: sending it again", patience)
            transport.write(request)
            transport.drain()
            resent += 1
            resend_at = time.monotonic() + patience
            continue
        raw = transport.read_until(b"\n", timeout=min(remaining, resend_at - now), char_timeout=config.timeout)
        if raw:  # something is talking: give it the full time before repeating the request
            resend_at = time.monotonic() + patience
        pending += check_parity(raw)
        if not pending.endswith(b"\n"):
            del pending[:-256]  # noise without line ends: an identification line is short
            continue
        line, pending = bytes(pending), bytearray()
        if line.rstrip(b"\r\n").endswith(b"!"):
            echoes += 1
            continue
        try:
            return parse_identification(line)
        except IdentificationError:
            log.debug("not an identification: %r", line)


def sign_on_mode_e(transport: Transport, config: PollConfig, time_scale: float = 1.0) -> Identification:
    """Sign on at 300 Bd, acknowledge HDLC at the offered rate (capped by ``config.baudrate``).

    Returns the identification; raises ``ModeERefused`` when the meter does not offer mode E,
    ``NoResponseError`` when nothing answers. On return the port runs at the HDLC rate.
    """
    transport.set_baudrate(300)
    transport.reset_input()
    request = add_parity(sign_on_request("?", config.device_address))
    transport.write(request)
    transport.drain()
    ident = _identification(transport, config, request, time_scale)
    t_ident = time.monotonic()
    if ident.mode != "E":
        raise ModeERefused(ident)
    rate = choose_rate(ident.baudrate, config.baudrate)
    rest = (SHORT_REACTION_TIME if ident.short_reaction else REACTION_TIME) / time_scale
    wait = t_ident + rest - time.monotonic()
    if wait > 0:
        transport.sleep(wait)
    t_ack = time.monotonic()
    transport.write(add_parity(acknowledgement(rate, protocol="2", mode="2")))
    transport.drain()
    wait = t_ack + config.baud_switch_delay - time.monotonic()
    if wait > 0:
        transport.sleep(wait)
    transport.set_baudrate(rate)
    transport.reset_input()  # an IR head's echo of the ACK
    log.debug("mode E: %s, HDLC at %d Bd", ident.raw, rate)
    return ident


__all__ = ["sign_on_mode_e", "ModeERefused"]
