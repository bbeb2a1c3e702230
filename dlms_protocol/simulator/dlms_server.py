"""A small DLMS/COSEM server (the meter side of polling), sans-io: bytes in, frames out.

Why our own and not gurux's ``GXDLMSServer``: in gurux-dlms 1.0.203 its ``handleRequest``
calls ``GXServerReply.setReply`` (missing), its error path calls ``receivedData.size(0)`` on
an int, and even with ``setReply`` patched in, the answer to a gurux client's SNRM is an
I-frame with an exception response instead of a UA (tried 2026-12-02, see
``docs/dlms-polling.md`` §7). Making it work means patching gurux. This server is built on the
project's encoders (HDLC framing from ``dlms.encode``, A-XDR from ``dlms.apdu``, AES-GCM from
``cryptography``); gurux's *client* polls it in the tests, which checks both sides.

What it speaks (IEC 62056-46/-47/-53, LN referencing):

* **HDLC**: SNRM/UA with max-info negotiation, I-frames with N(S)/N(R), segmentation of long
  answers (format ``A8``, continued on the client's RR), DISC/UA (DM when not connected); frames
  for another server address are ignored (as a meter on a bus does). **Wrapper** (TCP 4059).
* **Association**: AARQ/AARE per client SAP: no security, LLS (password), HLS-GMAC (suite 0,
  ciphered context, ``f(StoC)`` check through the association object's method 1). Rejections
  carry the ACSE diagnostic a real meter gives (authentication failure, mechanism required ...).
* **GET**: normal, with-list, block transfer (``get-request-next``) when the answer exceeds the
  negotiated PDU size; selective access on profile generic by range (selector 1) and entry (2).
  Errors as data-access-results (object undefined, read-write denied).
* **Ciphering**: glo-get/glo-action requests and responses (security control 0x30), invocation
  counter checked to increase.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Dict, List, Optional, Tuple, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..dlms.apdu import decode_data, parse_datetime
from ..dlms.encode import ber_length, hdlc_address, hdlc_frame
from ..dlms.hdlc import FLAG, parse_frame, parse_header
from ..errors import DlmsError
from .cosem_model import ASSOCIATION_LN, CLASS_ASSOCIATION_LN, CLASS_PROFILE_GENERIC, MeterModel, ln_bytes

log = logging.getLogger(__name__)

MECH_NONE, MECH_LOW, MECH_HIGH_GMAC = 0, 1, 5
_CONTEXT_LN, _CONTEXT_LN_CIPHER = 1, 3
_OID_PREFIX = bytes([0x60, 0x85, 0x74, 0x05, 0x08])
#: conformance bits the server offers (bit 0 = most significant bit of the 24-bit block): block transfer
#: with get (11), multiple references (14), get (19), selective access (21), action (23)
CONFORMANCE = sum(1 << (23 - bit) for bit in (11, 14, 19, 21, 23))
#: ACSE diagnostics (acse-service-user)
DIAG_NONE, DIAG_NO_REASON, DIAG_CONTEXT, DIAG_MECH_NOT_RECOGNISED, DIAG_MECH_REQUIRED, DIAG_AUTH_FAILURE = \
    0, 1, 2, 11, 12, 13
DIAG_AUTH_REQUIRED = 14  # accepted, but HLS pass 3/4 (f(StoC)) must follow
#: data-access-results
DAR_READ_DENIED, DAR_UNDEFINED, DAR_UNAVAILABLE, DAR_NO_LONG_GET = 3, 4, 11, 16

GET_REQUEST, GET_RESPONSE, ACTION_REQUEST, ACTION_RESPONSE = 0xC0, 0xC4, 0xC3, 0xC7
GLO_GET_REQUEST, GLO_GET_RESPONSE, GLO_ACTION_REQUEST, GLO_ACTION_RESPONSE = 0xC8, 0xCC, 0xCB, 0xCF
GLO_INITIATE_REQUEST, GLO_INITIATE_RESPONSE = 0x21, 0x28
AARQ, AARE, RLRQ, RLRE = 0x60, 0x61, 0x62, 0x63
SC_AUTH_ENC = 0x30
TAG_LEN = 12


@dataclass
class ClientAccount:
    """What a client SAP must present: mechanism 0 (none), 1 (LLS password), 5 (HLS-GMAC)."""

    mechanism: int = MECH_NONE
    password: bytes = field(default=b"", repr=False)


@dataclass
class ServerSecurity:
    """Suite-0 keys of the meter (shared with the HLS client) and its own system title."""

    key: bytes = field(repr=False)
    auth_key: bytes = field(repr=False)
    system_title: bytes = b"SIM00001"
    invocation_counter: int = 0


def default_accounts(password: bytes = b"12345678") -> Dict[int, ClientAccount]:
    """Public client 16 (no security), reading client 32 (LLS), management client 1 (HLS-GMAC)."""
    return {16: ClientAccount(MECH_NONE), 32: ClientAccount(MECH_LOW, password), 1: ClientAccount(MECH_HIGH_GMAC)}


class _Tlv:
    """BER TLVs of an AARQ (lengths up to 0x81 nn)."""

    def __init__(self, data: bytes) -> None:
        self.items: Dict[int, bytes] = {}
        i = 0
        while i + 1 < len(data):
            tag, n = data[i], data[i + 1]
            i += 2
            if n == 0x81:
                n, i = data[i], i + 1
            self.items[tag] = bytes(data[i:i + n])
            i += n


def _gcm_iv(system_title: bytes, counter: int) -> bytes:
    return system_title + counter.to_bytes(4, "big")


def gmac(key: bytes, auth_key: bytes, system_title: bytes, counter: int, challenge: bytes) -> bytes:
    """HLS-GMAC f(challenge) = SC(0x10) || IC || GMAC tag over SC || AK || challenge."""
    enc = Cipher(algorithms.AES(key), modes.GCM(_gcm_iv(system_title, counter))).encryptor()
    enc.authenticate_additional_data(bytes([0x10]) + auth_key + challenge)
    enc.finalize()
    return bytes([0x10]) + counter.to_bytes(4, "big") + enc.tag[:TAG_LEN]


def seal(key: bytes, auth_key: bytes, system_title: bytes, counter: int, plain: bytes) -> bytes:
    """SC 0x30 || IC || ciphertext || tag (the content of a glo-ciphered APDU)."""
    enc = Cipher(algorithms.AES(key), modes.GCM(_gcm_iv(system_title, counter))).encryptor()
    enc.authenticate_additional_data(bytes([SC_AUTH_ENC]) + auth_key)
    body = enc.update(plain) + enc.finalize()
    return bytes([SC_AUTH_ENC]) + counter.to_bytes(4, "big") + body + enc.tag[:TAG_LEN]


def unseal(key: bytes, auth_key: bytes, system_title: bytes, content: bytes) -> Tuple[int, bytes]:
    """(invocation counter, plaintext) of SC || IC || ciphertext || tag; raises InvalidTag."""
    if len(content) < 5 + TAG_LEN or content[0] != SC_AUTH_ENC:
        raise InvalidTag()
    counter = int.from_bytes(content[1:5], "big")
    dec = Cipher(algorithms.AES(key), modes.GCM(_gcm_iv(system_title, counter), content[-TAG_LEN:],
                                                min_tag_length=TAG_LEN)).decryptor()
    dec.authenticate_additional_data(bytes([SC_AUTH_ENC]) + auth_key)
    return counter, dec.update(content[5:-TAG_LEN]) + dec.finalize()


def _octets(data: bytes, i: int) -> Tuple[bytes, int]:
    n = data[i]
    i += 1
    if n & 0x80:
        size = n & 0x7F
        n = int.from_bytes(data[i:i + size], "big")
        i += size
    return data[i:i + n], i + n


class CosemServer:
    """The application layer of one connection: association state, GET, HLS, ciphering."""

    def __init__(self, model: MeterModel, accounts: Optional[Dict[int, ClientAccount]] = None,
                 security: Optional[ServerSecurity] = None, max_pdu: int = 512,
                 events: Optional[List[Tuple[str, str]]] = None) -> None:
        self.model = model
        self.accounts = accounts if accounts is not None else default_accounts()
        self.security = security
        self.max_pdu = max_pdu
        self.events = events if events is not None else []
        #: highest invocation counter seen per client system title (survives reconnects)
        self.seen_counters: Dict[bytes, int] = {}
        self.reset()

    def reset(self) -> None:
        self.client: Optional[int] = None
        self.associated = False
        self.hls_pending = False
        self.ciphered = False
        self.client_title = b""
        self.stoc = b""
        self.pdu_size = self.max_pdu
        self._blocks: List[bytes] = []
        self._block_no = 0
        self._invoke = 0x81

    def event(self, name: str, detail: str = "") -> None:
        self.events.append((name, detail))
        log.debug("dlms server: %s %s", name, detail)

    # ------------------------------------------------------------------ dispatch
    def handle(self, apdu: bytes, client: int) -> Optional[bytes]:
        """The answer APDU to ``apdu`` from client SAP ``client`` (None: no answer).

        A request the server cannot parse gets an exception-response, as a meter answers garbage.
        """
        if not apdu:
            return None
        try:
            return self._dispatch(apdu, client)
        except (IndexError, ValueError, DlmsError) as exc:
            self.event("malformed", f"APDU 0x{apdu[0]:02x}: {exc!r}")
            return bytes([0xD8, 0x01, 0x02])

    def _dispatch(self, apdu: bytes, client: int) -> Optional[bytes]:
        tag = apdu[0]
        if tag == AARQ:
            return self._aarq(apdu, client)
        if tag == RLRQ:
            self.event("release")
            self.reset()
            return bytes([RLRE, 0x03, 0x80, 0x01, 0x00])
        if not self.associated or client != self.client:
            self.event("refused", f"APDU 0x{tag:02x} without association")
            return bytes([0xD8, 0x01, 0x01])  # exception-response: service not allowed
        if self.ciphered:
            return self._ciphered(apdu)
        return self._plain(apdu)

    def _plain(self, apdu: bytes) -> Optional[bytes]:
        if self.hls_pending and apdu[0] != ACTION_REQUEST:
            return bytes([0xD8, 0x01, 0x01])
        if apdu[0] == GET_REQUEST:
            return self._get(apdu)
        if apdu[0] == ACTION_REQUEST:
            return self._action(apdu)
        self.event("unsupported", f"APDU 0x{apdu[0]:02x}")
        return bytes([0xD8, 0x01, 0x02])

    def _ciphered(self, apdu: bytes) -> Optional[bytes]:
        sec = self.security
        assert sec is not None
        tags = {GLO_GET_REQUEST: GLO_GET_RESPONSE, GLO_ACTION_REQUEST: GLO_ACTION_RESPONSE}
        if apdu[0] not in tags:
            self.event("refused", f"plain APDU 0x{apdu[0]:02x} in a ciphered association")
            return bytes([0xD8, 0x01, 0x01])
        content, _ = _octets(apdu, 1)
        try:
            counter, plain = unseal(sec.key, sec.auth_key, self.client_title, content)
        except InvalidTag:
            self.event("decrypt-failed", "wrong key or damaged request")
            return bytes([0xD8, 0x01, 0x01])
        if not self._counter_ok(counter):
            return bytes([0xD8, 0x01, 0x01])
        answer = self._plain(plain)
        if answer is None:
            return None
        sec.invocation_counter += 1
        sealed = seal(sec.key, sec.auth_key, sec.system_title, sec.invocation_counter, answer)
        return bytes([tags[apdu[0]]]) + ber_length(len(sealed)) + sealed

    def _counter_ok(self, counter: int) -> bool:
        last = self.seen_counters.get(self.client_title, -1)
        if counter <= last:
            self.event("counter-replayed", f"{counter} <= {last}")
            return False
        self.seen_counters[self.client_title] = counter
        with self.model.lock:  # (what the meter's frame-counter object, 0.0.43.1.0.255, tells)
            self.model.frame_counter = max(self.model.frame_counter, counter)
        return True

    # --------------------------------------------------------------- association
    def _aare(self, result: int, diagnostic: int, mechanism: int = MECH_NONE, user_info: bytes = b"",
              context: int = _CONTEXT_LN) -> bytes:
        body = bytearray()
        body += b"\xA1\x09\x06\x07" + _OID_PREFIX + bytes([0x01, context])
        body += bytes([0xA2, 0x03, 0x02, 0x01, result])
        body += bytes([0xA3, 0x05, 0xA1, 0x03, 0x02, 0x01, diagnostic])
        if mechanism == MECH_HIGH_GMAC and self.security is not None:
            body += bytes([0xA4, 0x0A, 0x04, 0x08]) + self.security.system_title
            body += b"\x88\x02\x07\x80" + b"\x89\x07" + _OID_PREFIX + bytes([0x02, mechanism])
            body += bytes([0xAA, 2 + len(self.stoc), 0x80, len(self.stoc)]) + self.stoc
        if user_info:
            body += bytes([0xBE, len(user_info) + 2, 0x04, len(user_info)]) + user_info
        return bytes([AARE]) + ber_length(len(body)) + bytes(body)

    def _initiate_response(self) -> bytes:
        return (b"\x08\x00\x06\x5F\x1F\x04\x00" + CONFORMANCE.to_bytes(3, "big") + self.pdu_size.to_bytes(2, "big")
                + b"\x00\x07")

    def _aarq(self, apdu: bytes, client: int) -> bytes:
        self.reset()
        tlv = _Tlv(apdu[2:] if apdu[1] != 0x81 else apdu[3:])
        context = tlv.items.get(0xA1, b"")[-1:]
        mech_oid = tlv.items.get(0x8B, b"")
        mechanism = mech_oid[-1] if mech_oid[:6] == _OID_PREFIX + b"\x02" else MECH_NONE
        account = self.accounts.get(client)
        if account is None:
            self.event("aarq-refused", f"unknown client SAP {client}")
            return self._aare(1, DIAG_NO_REASON)
        if mechanism != account.mechanism:
            self.event("aarq-refused", f"client {client}: mechanism {mechanism}, needs {account.mechanism}")
            diag = DIAG_MECH_REQUIRED if mechanism == MECH_NONE else DIAG_MECH_NOT_RECOGNISED
            return self._aare(1, diag)
        auth_value = tlv.items.get(0xAC, b"")
        secret = auth_value[2:] if auth_value[:1] == b"\x80" else b""
        user_info = tlv.items.get(0xBE, b"")
        initiate = user_info[2:] if user_info[:1] == b"\x04" else b""
        if mechanism == MECH_LOW and secret != account.password:
            self.event("aarq-refused", f"client {client}: wrong password")
            return self._aare(1, DIAG_AUTH_FAILURE)
        if mechanism == MECH_HIGH_GMAC:
            return self._aarq_hls(client, tlv, secret, initiate, context)
        plain = self._initiate_request(initiate)
        if plain is None:
            return self._aare(1, DIAG_NO_REASON)
        self.client, self.associated = client, True
        self.event("associated", f"client {client} mechanism {mechanism}")
        return self._aare(0, DIAG_NONE, mechanism, self._initiate_response())

    def _initiate_request(self, initiate: bytes) -> Optional[bytes]:
        """Check an InitiateRequest (``01 ...``) and take the client's max PDU size."""
        if initiate[:1] != b"\x01" or len(initiate) < 9:
            return None
        i = 1
        for _ in range(3):  # dedicated key, response-allowed, proposed quality of service
            if i < len(initiate) and initiate[i]:
                i += 2 + initiate[i + 1] if initiate[i] == 0x01 and i + 1 < len(initiate) else 1
            else:
                i += 1
        tail = initiate[-2:]
        self.pdu_size = max(64, min(self.max_pdu, int.from_bytes(tail, "big") or self.max_pdu))
        return initiate

    def _aarq_hls(self, client: int, tlv: _Tlv, ctos: bytes, initiate: bytes, context: bytes) -> bytes:
        sec = self.security
        title = tlv.items.get(0xA6, b"")[2:]
        if sec is None or len(title) != 8 or context != bytes([_CONTEXT_LN_CIPHER]):
            self.event("aarq-refused", f"client {client}: HLS-GMAC needs the ciphered context and a system title")
            return self._aare(1, DIAG_CONTEXT, context=context[0] if context else _CONTEXT_LN)
        if initiate[:1] != bytes([GLO_INITIATE_REQUEST]):
            return self._aare(1, DIAG_NO_REASON, context=_CONTEXT_LN_CIPHER)
        self.client_title = title
        content, _ = _octets(initiate, 1)
        try:
            counter, plain = unseal(sec.key, sec.auth_key, title, content)
        except InvalidTag:
            self.event("aarq-refused", f"client {client}: user information does not decrypt (wrong keys)")
            return self._aare(1, DIAG_AUTH_FAILURE, context=_CONTEXT_LN_CIPHER)
        if not self._counter_ok(counter) or self._initiate_request(plain) is None:
            return self._aare(1, DIAG_AUTH_FAILURE, context=_CONTEXT_LN_CIPHER)
        self.client, self.associated, self.hls_pending, self.ciphered = client, True, True, True
        self.ctos = ctos
        self.stoc = os.urandom(16)
        sec.invocation_counter += 1
        sealed = seal(sec.key, sec.auth_key, sec.system_title, sec.invocation_counter, self._initiate_response())
        self.event("aare-hls", f"client {client}: waiting for f(StoC)")
        info = bytes([GLO_INITIATE_RESPONSE]) + ber_length(len(sealed)) + sealed
        return self._aare(0, DIAG_AUTH_REQUIRED, MECH_HIGH_GMAC, info, context=_CONTEXT_LN_CIPHER)

    def _action(self, apdu: bytes) -> bytes:
        """Method 1 of the association object: reply_to_HLS_authentication."""
        invoke = apdu[2]
        class_id = int.from_bytes(apdu[3:5], "big")
        ln, method = apdu[5:11], apdu[11]
        sec = self.security
        if class_id != CLASS_ASSOCIATION_LN or ln != ln_bytes(ASSOCIATION_LN) or method != 1 or sec is None \
                or not self.hls_pending or apdu[12:13] != b"\x01" or apdu[13:14] != b"\x09":
            return bytes([ACTION_RESPONSE, 0x01, invoke, 0x03, 0x00])  # read-write-denied, no data
        reply, _ = _octets(apdu, 14)
        counter = int.from_bytes(reply[1:5], "big") if len(reply) >= 5 else -1
        if reply != gmac(sec.key, sec.auth_key, self.client_title, counter, self.stoc):
            self.event("hls-failed", "f(StoC) does not match")
            self.associated = self.hls_pending = False
            return bytes([ACTION_RESPONSE, 0x01, invoke, 0x03, 0x00])
        self.hls_pending = False
        sec.invocation_counter += 1
        answer = gmac(sec.key, sec.auth_key, sec.system_title, sec.invocation_counter, self.ctos)
        self.event("hls-ok", f"client {self.client}")
        return bytes([ACTION_RESPONSE, 0x01, invoke, 0x00, 0x01, 0x00, 0x09, len(answer)]) + answer

    # ---------------------------------------------------------------------- GET
    def _get(self, apdu: bytes) -> bytes:
        kind, invoke = apdu[1], apdu[2]
        if kind == 0x02:
            return self._next_block(invoke, int.from_bytes(apdu[3:7], "big"))
        if kind == 0x03:
            count = apdu[3]
            i = 4
            parts: List[Union[bytes, int]] = []
            for _ in range(count):
                data, i = self._attribute(apdu, i)
                parts.append(data)
            body = bytes([count]) + b"".join(b"\x00" + d if isinstance(d, bytes) else bytes([1, int(d)]) for d in parts)
            return self._respond(bytes([GET_RESPONSE, 0x03, invoke]), body, invoke)
        data, _ = self._attribute(apdu, 3)
        if not isinstance(data, bytes):
            return bytes([GET_RESPONSE, 0x01, invoke, 0x01, data])
        return self._respond(bytes([GET_RESPONSE, 0x01, invoke, 0x00]), data, invoke)

    def _respond(self, head: bytes, body: bytes, invoke: int) -> bytes:
        """A normal answer, or the first block of a block transfer when it exceeds the PDU size."""
        if len(head) + len(body) <= self.pdu_size - (TAG_LEN + 8 if self.ciphered else 0):
            return head + body
        size = self.pdu_size - 16 - (TAG_LEN + 8 if self.ciphered else 0)
        payload = body if head[1] == 0x03 else body
        if head[1] == 0x03:
            payload = body  # with-list answers go out as raw data of the list
        self._blocks = [payload[i:i + size] for i in range(0, len(payload), size)]
        self._block_no = 0
        self.event("block-transfer", f"{len(payload)} bytes in {len(self._blocks)} blocks")
        return self._next_block(invoke, 0)

    def _next_block(self, invoke: int, acknowledged: int) -> bytes:
        if not self._blocks or acknowledged != self._block_no:
            return bytes([GET_RESPONSE, 0x02, invoke, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, DAR_NO_LONG_GET])
        chunk = self._blocks.pop(0)
        self._block_no += 1
        last = 0 if self._blocks else 1
        return (bytes([GET_RESPONSE, 0x02, invoke, last]) + self._block_no.to_bytes(4, "big") + b"\x00"
                + ber_length(len(chunk)) + chunk)

    def _attribute(self, apdu: bytes, i: int) -> Tuple[Union[bytes, int], int]:
        """(encoded value or a data-access-result, next index) for the descriptor at ``apdu[i:]``."""
        class_id = int.from_bytes(apdu[i:i + 2], "big")
        ln, attr = apdu[i + 2:i + 8], apdu[i + 8]
        i += 9
        selector, params = 0, None
        if i < len(apdu) and apdu[i] == 1:
            selector = apdu[i + 1]
            params, _, end = decode_data(apdu, i + 2)
            i = end
        else:
            i += 1
        obj = self.model.find(class_id, bytes(ln))
        if obj is None:
            self.event("get-undefined", f"class {class_id} {ln.hex()} attribute {attr}")
            return DAR_UNDEFINED, i
        if not obj.may_read(self.client or 0, attr):
            self.event("get-denied", f"{obj.ln} attribute {attr} for client {self.client}")
            return DAR_READ_DENIED, i
        if class_id == CLASS_PROFILE_GENERIC and attr == 2 and selector:
            return self._select_rows(selector, params), i
        value = obj.attribute(attr)
        if value is None:
            return DAR_UNAVAILABLE, i
        self.event("get", f"{obj.ln} attribute {attr}")
        return value, i

    def _select_rows(self, selector: int, params: object) -> Union[bytes, int]:
        rows = list(self.model.profile_rows)
        if selector == 1 and isinstance(params, list) and len(params) >= 3:
            start, end = (_when(v) for v in params[1:3])
            rows = [r for r in rows if (start is None or not _before(r.when, start))
                    and (end is None or not _before(end, r.when))]
        elif selector == 2 and isinstance(params, list) and len(params) >= 2:
            first, last = int(params[0]), int(params[1])
            rows = rows[max(0, first - 1):(last or len(rows))]
        else:
            return DAR_UNAVAILABLE
        self.event("get-rows", f"selector {selector}: {len(rows)} rows")
        return self.model.encode_rows(rows)


def _when(value: object) -> Optional[datetime]:
    """A range bound as sent: with its offset when the client gave a deviation."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, (bytes, bytearray)) and len(value) == 12:
        return parse_datetime(bytes(value))
    return None


def _before(a: datetime, b: datetime) -> bool:
    """As a meter compares a capture time with a range bound: as instants when both carry an
    offset (a meter that knows its zone), else as wall-clock times (local time)."""
    if a.tzinfo is not None and b.tzinfo is not None:
        return a < b
    return a.replace(tzinfo=None) < b.replace(tzinfo=None)


# ---------------------------------------------------------------------------- links
class HdlcServer:
    """HDLC link of one meter (server address ``logical``/``physical``, ``size`` bytes)."""

    def __init__(self, app: CosemServer, logical: int = 1, physical: int = 17, size: int = 2,
                 max_info: int = 128) -> None:
        self.app = app
        self.address = hdlc_address((logical << (14 if size == 4 else 7)) | physical if size > 1 else logical, size)
        self.max_info = max_info
        self._buf = bytearray()
        self._out: List[bytes] = []  # remaining segments of a long answer
        self._rx_segments = bytearray()
        self.connected = False
        self.vs = self.vr = 0
        self.tx_info = max_info

    def feed(self, data: bytes) -> List[bytes]:
        """Frames to send for the bytes received."""
        self._buf += data
        out: List[bytes] = []
        while True:
            start = self._buf.find(bytes([FLAG]))
            if start < 0:
                self._buf.clear()
                return out
            del self._buf[:start]
            try:
                header = parse_header(self._buf)
            except DlmsError:
                del self._buf[:1]
                continue
            if header is None or header.total > len(self._buf):
                return out
            try:
                frame = parse_frame(self._buf, 0, header)
            except DlmsError:
                del self._buf[:1]
                continue
            del self._buf[:header.total]
            out += self._frame(frame.header.dst, frame.header.src, frame.header.control, frame.info,
                               frame.header.segmented)

    def _reply(self, client: bytes, control: int, info: bytes = b"", segmented: bool = False) -> bytes:
        return hdlc_frame(info, dst=client, src=self.address, control=control, segmented=segmented)

    def _frame(self, dst: bytes, src: bytes, control: int, info: bytes, segmented: bool) -> List[bytes]:
        if dst != self.address:
            self.app.event("hdlc-ignored", f"frame for address {dst.hex()}")
            return []
        client = src[0] >> 1
        if control & 0xEF == 0x83:  # SNRM
            return [self._snrm(src, info)]
        if control & 0xEF == 0x43:  # DISC
            was = self.connected
            self.connected = False
            self.app.reset()
            self.app.event("disc")
            return [self._reply(src, 0x73 if was else 0x1F)]
        if not self.connected:
            return [self._reply(src, 0x1F)]  # DM
        if control & 0x01 == 0:  # I-frame
            return self._iframe(src, client, control, info, segmented)
        if control & 0x0F == 0x01 and self._out:  # RR: next segment
            return [self._next_segment(src)]
        return [self._reply(src, ((self.vr & 7) << 5) | 0x11)]

    def _snrm(self, client: bytes, info: bytes) -> bytes:
        self.connected = True
        self.vs = self.vr = 0
        self._out.clear()
        self._rx_segments.clear()
        self.app.reset()
        want_rx = want_tx = 128  # the defaults when the SNRM carries no parameters
        if info[:2] == b"\x81\x80":
            i = 3
            while i + 1 < len(info):
                pid, n = info[i], info[i + 1]
                value = int.from_bytes(info[i + 2:i + 2 + n], "big")
                if pid == 0x06:
                    want_rx = value  # the client's receive size bounds our transmit size
                elif pid == 0x05:
                    want_tx = value  # the client's transmit size bounds our receive size
                i += 2 + n
        self.tx_info = max(32, min(self.max_info, want_rx))
        self.app.event("snrm", f"client {client[0] >> 1}, max info {self.tx_info}")
        params = (bytes([0x05, 0x01, self.tx_info]) if self.tx_info < 256
                  else b"\x05\x02" + self.tx_info.to_bytes(2, "big"))
        params += bytes([0x06, 0x01, max(32, min(self.max_info, want_tx, 255))])
        params += b"\x07\x04\x00\x00\x00\x01\x08\x04\x00\x00\x00\x01"
        return self._reply(client, 0x73, b"\x81\x80" + bytes([len(params)]) + params)

    def _iframe(self, src: bytes, client: int, control: int, info: bytes, segmented: bool) -> List[bytes]:
        ns = (control >> 1) & 7
        if ns != self.vr:
            self.app.event("hdlc-sequence", f"N(S) {ns}, expected {self.vr}")
            return [self._reply(src, ((self.vr & 7) << 5) | 0x11)]
        self.vr = (self.vr + 1) & 7
        self._rx_segments += info
        if segmented:
            return [self._reply(src, ((self.vr & 7) << 5) | 0x11)]
        data, self._rx_segments = bytes(self._rx_segments), bytearray()
        apdu = data[3:] if data[:2] == b"\xE6\xE6" else data
        answer = self.app.handle(apdu, client)
        if answer is None:
            return []
        payload = b"\xE6\xE7\x00" + answer
        self._out = [payload[i:i + self.tx_info] for i in range(0, len(payload), self.tx_info)]
        return [self._next_segment(src)]

    def _next_segment(self, src: bytes) -> bytes:
        chunk = self._out.pop(0)
        control = ((self.vr & 7) << 5) | 0x10 | ((self.vs & 7) << 1)
        self.vs = (self.vs + 1) & 7
        return self._reply(src, control, chunk, segmented=bool(self._out))


class WrapperServer:
    """DLMS/IP wrapper (IEC 62056-47) of one TCP connection."""

    def __init__(self, app: CosemServer, logical: int = 1) -> None:
        self.app = app
        self.logical = logical
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= 8:
            length = int.from_bytes(self._buf[6:8], "big")
            if self._buf[:2] != b"\x00\x01":
                self._buf.clear()
                break
            if len(self._buf) < 8 + length:
                break
            source = int.from_bytes(self._buf[2:4], "big")
            dest = int.from_bytes(self._buf[4:6], "big")
            apdu = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            if dest != self.logical:
                self.app.event("wrapper-ignored", f"destination {dest}")
                continue
            answer = self.app.handle(apdu, source)
            if answer is not None:
                out.append(b"\x00\x01" + dest.to_bytes(2, "big") + source.to_bytes(2, "big")
                           + len(answer).to_bytes(2, "big") + answer)
        return out


__all__ = ["CosemServer", "HdlcServer", "WrapperServer", "ClientAccount", "ServerSecurity", "default_accounts",
           "gmac", "seal", "unseal", "MECH_NONE", "MECH_LOW", "MECH_HIGH_GMAC"]
