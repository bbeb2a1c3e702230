"""One DLMS/COSEM client session on gurux-dlms's ``GXDLMSClient``, over the project's transport.

gurux builds and parses every frame (SNRM/UA, AARQ/AARE, GET with block transfer, HDLC
segmentation, ciphering, HLS-GMAC); this module moves the bytes through ``Transport`` and turns
every failure into a ``DlmsError`` that says at which layer it stopped and what to do:

* no answer: to the SNRM (HDLC link: address, address size, baud rate), to the AARQ
  (association), to a GET;
* association refused: wrong password (LLS), wrong keys or a stale invocation counter
  (HLS-GMAC, ``AuthenticationError``), a client address the meter doesn't know, a security level
  the client doesn't have there;
* object not readable: undefined object, access denied (``AccessError``).

Passwords and keys never reach a message or a log line.
"""
from __future__ import annotations

import contextlib
import io
import logging
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

from gurux_dlms import GXByteBuffer, GXDLMSClient, GXDLMSException, GXReplyData
from gurux_dlms.enums import Authentication, Conformance, InterfaceType, Security
from gurux_dlms.secure import GXDLMSSecureClient

from ..errors import (AccessError, AssociationError, AuthenticationError, DlmsError, FramingError, NoResponseError,
                      ProtocolError, TransportError)
from ..transport import Transport
from .config import PollConfig

log = logging.getLogger(__name__)

_ACCESS_RESULTS = {
    1: "hardware fault", 2: "temporary failure", 3: "read-write denied", 4: "object undefined",
    9: "object class inconsistent", 11: "object unavailable", 12: "type unmatched", 13: "scope of access violated",
    14: "data block unavailable", 15: "long get aborted", 16: "no long get in progress", 250: "other reason",
}
_AUTH = {"none": Authentication.NONE, "low": Authentication.LOW, "high_gmac": Authentication.HIGH_GMAC}
#: ACSE diagnostics (IEC 62056-5-3 acse-service-user)
DIAG_NO_REASON, DIAG_CONTEXT, DIAG_MECH_NOT_RECOGNISED, DIAG_MECH_REQUIRED, DIAG_AUTH_FAILURE, DIAG_AUTH_REQUIRED = \
    1, 2, 11, 12, 13, 14


def server_address(config: PollConfig) -> int:
    """The server address gurux puts into frames: logical device (+ physical address for 2/4 bytes)."""
    if config.wrapper:
        return config.logical_address
    if config.address_size == 1:
        return config.logical_address
    return GXDLMSClient.getServerAddress(config.logical_address, config.physical_address, config.address_size)


def make_client(config: PollConfig) -> GXDLMSClient:
    """A gurux client for ``config`` (LN referencing always, see docs/dlms-polling.md §8.1)."""
    iface = InterfaceType.WRAPPER if config.wrapper else InterfaceType.HDLC
    auth = _AUTH[config.authentication]
    password = config.password.encode() if (config.password and config.authentication == "low") else None
    if config.authentication == "high_gmac":
        client: GXDLMSClient = GXDLMSSecureClient(True, config.client_address, server_address(config), auth, None,
                                                  iface)
        ciphering = client.ciphering
        ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        ciphering.systemTitle = config.system_title
        ciphering.blockCipherKey = config.key
        ciphering.authenticationKey = config.auth_key
        ciphering.invocationCounter = config.invocation_counter
    else:
        client = GXDLMSClient(True, config.client_address, server_address(config), auth, password, iface)
    if not config.wrapper:
        client.serverAddressSize = config.address_size
        client.hdlcSettings.maxInfoRX = config.max_info
        client.hdlcSettings.maxInfoTX = config.max_info
    return client


class DlmsSession:
    """Connect, read, release. Use as a context manager: release and DISC happen even after errors."""

    def __init__(self, config: PollConfig, transport: Transport) -> None:
        self.config = config
        self.transport = transport
        self.client = make_client(config)
        self.connected = False
        self.frames = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.exchanges = 0
        self.max_info_tx: Optional[int] = None
        self.max_info_rx: Optional[int] = None
        self._secure = config.authentication == "high_gmac"

    @property
    def invocation_counter(self) -> Optional[int]:
        ciphering = getattr(self.client, "ciphering", None)
        return int(ciphering.invocationCounter) if ciphering is not None else None

    # ------------------------------------------------------------------ I/O core
    @contextlib.contextmanager
    def _gurux(self) -> Iterator[None]:
        """Keep gurux's print() calls (cipher notes, "Invalid HDLC Frame") off stdout: the CLI's
        ``--json`` output must stay JSON. Logged at debug level, except in ciphered sessions
        (gurux prints challenges there)."""
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink):
                yield
        finally:
            text = sink.getvalue().strip()
            if text and not self._secure:
                log.debug("gurux-dlms says: %s", text[:200])

    def _exchange(self, data: Any, reply: GXReplyData, layer: str) -> None:
        """Send one frame and read until gurux has a complete answer frame."""
        raw = bytes(data)
        self.transport.write(raw)
        self.bytes_out += len(raw)
        self.exchanges += 1
        buf = GXByteBuffer()
        notify = GXReplyData()
        got = 0
        deadline = time.monotonic() + self.config.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._no_answer(layer, got)
            chunk = self.transport.read_some(4096, remaining)
            if not chunk:
                continue
            got += len(chunk)
            self.bytes_in += len(chunk)
            buf.set(chunk)
            try:
                with self._gurux():
                    done = self.client.getData(buf, reply, notify)
            except GXDLMSException:
                raise
            except (ValueError, TypeError, IndexError, KeyError) as exc:
                raise FramingError(f"answer to the {layer} cannot be decoded ({exc})",
                                   "noise on the line or a meter that speaks another dialect; try again, "
                                   "check the baud rate") from None
            except Exception as exc:  # gurux raises bare Exception("Wrong CRC.")
                if "CRC" in str(exc):
                    raise FramingError(f"answer to the {layer} has a wrong checksum (FCS)",
                                       "noise on the line: check the cable, the head's position or a lower rate"
                                       ) from None
                raise ProtocolError(f"answer to the {layer} rejected by gurux-dlms: {exc}",
                                    "check the interface (HDLC or wrapper) and the addresses") from None
            if done:
                self.frames += 1
                return

    def _no_answer(self, layer: str, got: int) -> NoResponseError:
        cfg = self.config
        if got:
            return NoResponseError(f"the answer to the {layer} stopped after {got} bytes",
                                   "check the cable and the line's baud rate; noise can cut frames")
        if layer == "SNRM":
            return NoResponseError(
                f"no answer to SNRM (HDLC link set-up) from server address {cfg.logical_address}/"
                f"{cfg.physical_address} ({cfg.address_size}-byte) within {cfg.timeout:g} s",
                "check the physical and logical address and the address size (1, 2 or 4 bytes), the baud rate "
                "and the RS485 wiring (A/B); a meter still busy with an earlier session answers after its "
                "inactivity time-out (about 2 minutes)")
        if layer == "AARQ":
            return NoResponseError(
                f"the meter accepted the HDLC link but did not answer the association request (AARQ) of client "
                f"{cfg.client_address} within {cfg.timeout:g} s",
                "check the client address and the security level this client has on the meter")
        if layer == "DLMS/IP wrapper AARQ":
            return NoResponseError(
                f"no answer to the association request (AARQ) on {cfg.port} within {cfg.timeout:g} s",
                "check the logical device (wrapper destination port, usually 1) and client address; "
                "is it really a DLMS/IP meter on port 4059?")
        return NoResponseError(f"no answer to the {layer} within {cfg.timeout:g} s",
                               "the meter stopped answering: check the line; the next cycle connects again")

    def request(self, frames: Any, layer: str) -> GXReplyData:
        """Send a request (one frame or gurux's list of frames), follow block transfer/segments."""
        reply = GXReplyData()
        if frames is None:
            return reply
        for frame in (frames if isinstance(frames, list) else [frames]):
            reply.clear()
            self._exchange(frame, reply, layer)
            while reply.isMoreData():
                with self._gurux():
                    more = self.client.receiverReady(reply)
                self._exchange(more, reply, layer)
        return reply

    # -------------------------------------------------------------- association
    def connect(self) -> None:
        """HDLC link (SNRM/UA) unless wrapper, then the association (AARQ/AARE, HLS step)."""
        client = self.client
        if not self.config.wrapper:
            reply = self.request(client.snrmRequest(), "SNRM")
            client.parseUAResponse(reply.data)
            # what the UA negotiated (gurux restores its defaults at DISC)
            self.max_info_tx = int(client.hdlcSettings.maxInfoTX)
            self.max_info_rx = int(client.hdlcSettings.maxInfoRX)
        self.connected = True
        layer = "DLMS/IP wrapper AARQ" if self.config.wrapper else "AARQ"
        with self._gurux():
            aarq = client.aarqRequest()
        reply = self.request(aarq, layer)
        try:
            with self._gurux():
                client.parseAareResponse(reply.data)
        except GXDLMSException as exc:
            raise self._refused(exc) from None
        except (ValueError, Exception) as exc:  # gurux: ValueError / bare Exception on garbage
            if self.config.authentication == "high_gmac":
                raise AuthenticationError(
                    "the meter's association response (AARE) does not decrypt",
                    "the encryption key (key) or authentication key (auth_key) is wrong") from None
            raise ProtocolError(f"the association response (AARE) is invalid ({exc})",
                                "check the client address and security settings") from None
        if client.getIsAuthenticationRequired():
            self._hls()
        log.debug("associated: conformance %s, max PDU %s", client.negotiatedConformance, client.maxReceivePDUSize)

    def _hls(self) -> None:
        client = self.client
        with self._gurux():
            frames = client.getApplicationAssociationRequest()
        reply = self.request(frames, "HLS authentication")
        if reply.error:
            raise AuthenticationError(
                f"the meter refused the HLS-GMAC authentication of client {self.config.client_address}",
                "the authentication key (auth_key) or system title does not match the meter's")
        try:
            with self._gurux():
                client.parseApplicationAssociationResponse(reply.data)
        except Exception:  # gurux raises bare Exception("... Server to Client do not match.")
            raise AuthenticationError("the meter's HLS-GMAC answer f(CtoS) does not match",
                                      "the authentication key (auth_key) is wrong") from None

    def _refused(self, exc: GXDLMSException) -> DlmsError:
        cfg = self.config
        diag = int(getattr(exc, "diagnostic", 0) or 0)
        who = f"client {cfg.client_address}"
        if diag == DIAG_AUTH_FAILURE and cfg.authentication == "high_gmac":
            return AuthenticationError(
                f"the meter refused the HLS-GMAC association of {who}: the keys or the invocation counter "
                "do not match",
                "check the encryption key (key), the authentication key (auth_key) and the system title; the "
                "meter refuses invocation counters it has seen: set invocation_counter higher (or keep a state_file)")
        if diag == DIAG_AUTH_FAILURE:
            return AssociationError(f"the meter refused the password (LLS) of {who}",
                                    "check the password; many meters lock the port for a while after wrong ones",
                                    diagnostic=diag)
        if diag in (DIAG_MECH_REQUIRED, DIAG_AUTH_REQUIRED, DIAG_MECH_NOT_RECOGNISED, DIAG_CONTEXT):
            return AssociationError(
                f"the meter refused security level {cfg.authentication!r} for {who} (diagnostic {diag})",
                "this client needs another security level: public client 16 has none, reading/management "
                "clients need a password (low) or keys (high_gmac)", diagnostic=diag)
        return AssociationError(
            f"the meter refused the association of {who} (diagnostic {diag})",
            "check the client address (16 public, 1 management, 32 reading client are common) and that this "
            "client exists on the meter", diagnostic=diag)

    def release(self) -> None:
        """Release the association and end the HDLC link (best effort, never raises)."""
        if not self.connected:
            return
        self.connected = False
        for what, make in (("release", self.client.releaseRequest), ("DISC", self.client.disconnectRequest)):
            try:
                with self._gurux():
                    frames = make()
                if frames:
                    self.request(frames, what)
            except (DlmsError, GXDLMSException, ValueError) as exc:
                log.debug("%s failed: %s", what, exc)
            except Exception as exc:  # gurux raises bare Exception; a failed release must not hide the result
                log.debug("%s failed: %s", what, exc)
            if self.config.wrapper:
                break

    def __enter__(self) -> "DlmsSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # --------------------------------------------------------------------- reads
    def _access(self, reply: GXReplyData, what: str) -> None:
        if reply.error:
            name = _ACCESS_RESULTS.get(int(reply.error), f"error {reply.error}")
            fix = ("this object does not exist on the meter: run --list to see what it has"
                   if int(reply.error) in (4, 11) else
                   f"client {self.config.client_address} may not read it: use a client (and security level) "
                   "with more rights, or drop it from the selection")
            raise AccessError(f"{what}: {name}", fix, result=int(reply.error))

    def get(self, obj: Any, attr: int) -> Any:
        """The raw value of one attribute (gurux types: int, bytearray, str, list ...)."""
        what = f"{obj.logicalName} attribute {attr}"
        try:
            with self._gurux():
                frames = self.client.read(obj, attr)
            reply = self.request(frames, f"GET {what}")
        except GXDLMSException as exc:
            raise AccessError(f"{what}: {exc}", "drop it from the selection or use another client",
                              result=getattr(exc, "errorCode", None)) from None
        self._access(reply, what)
        return reply.value

    def get_list(self, items: Sequence[Tuple[Any, int]], tolerant: bool = False) -> List[Any]:
        """Several attributes in as few requests as the meter allows (GET with-list, else one by one).

        ``tolerant``: an attribute the meter refuses comes back as its ``AccessError`` instead of
        ending the whole list (a with-list answer with a refused element is re-read one by one).
        """
        # gurux's readList() builds no request for a PDU size below 123 (a float item count)
        if len(items) > 1 and self.client.negotiatedConformance & Conformance.MULTIPLE_REFERENCES \
                and int(self.client.settings.maxPduSize) > 122:
            values: List[Any] = []
            refused = False
            size = self._list_chunk()
            for start in range(0, len(items), size):
                with self._gurux():
                    messages = self.client.readList(list(items[start:start + size]))
                for message in messages:  # every one: gurux numbered the HDLC frames of all of them already
                    reply = self.request(message if isinstance(message, list) else [message], "GET with-list")
                    refused = refused or bool(reply.error)
                    values.extend(reply.value or [])
            if not refused and len(values) == len(items):
                return values
            log.debug("GET with-list: %s; reading one by one", "an element was refused" if refused else
                      f"{len(values)} values for {len(items)} attributes")
        out: List[Any] = []
        for obj, attr in items:
            try:
                out.append(self.get(obj, attr))
            except AccessError as exc:
                if not tolerant:
                    raise
                out.append(exc)
        return out

    def _list_chunk(self) -> int:
        """Attributes per GET with-list so that the request fits into one HDLC frame.

        gurux-dlms 1.0.203 mis-parses the answer to a with-list request it had to segment (an
        IndexError in handleGetResponseWithList), so requests are kept to one frame: 10 bytes
        per attribute plus 7 bytes of LLC and header. The wrapper has no frame limit.
        """
        if self.config.wrapper:
            return 10
        return max(1, min(10, (int(self.client.hdlcSettings.maxInfoTX) - 7) // 10))

    def objects(self) -> Any:
        """The association's object list (gurux ``GXDLMSObjectCollection``)."""
        reply = self.request(self.client.getObjectsRequest(), "GET object list")
        self._access(reply, "object list (0.0.40.0.0.255 attribute 2)")
        with self._gurux():
            return self.client.parseObjects(reply.data, True)

    def rows_by_range(self, profile: Any, start: Any, end: Any) -> Any:
        what = f"{profile.logicalName} buffer by range"
        with self._gurux():
            frames = self.client.readRowsByRange(profile, start, end)
        reply = self.request(frames, f"GET {what}")
        self._access(reply, what)
        return reply.value


def default_opener(url: str, baudrate: int) -> Transport:
    """Open the port 8N1 (mode E's 7E1 sign-on adds its parity bit in software)."""
    return Transport.open(url, baudrate, 8, "N", 1)


Opener = Callable[[str, int], Transport]

__all__ = ["DlmsSession", "make_client", "server_address", "default_opener", "Opener", "TransportError"]
