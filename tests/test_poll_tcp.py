"""Polling over TCP (DLMS/IP wrapper) with gurux-dlms's client against the simulated meter.

The simulated meter is our own server (``simulator/dlms_server``); gurux's client decoding
every answer is the independent check that it speaks DLMS, and the values it reads are
compared with the meter model, not with what the server encoded.
"""
from __future__ import annotations

import io
import logging
import socket
import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dlms_protocol.dlms.units import symbol
from dlms_protocol.errors import AccessError, AssociationError, AuthenticationError, NoResponseError, TransportError
from dlms_protocol.poll.config import PollConfig
from dlms_protocol.poll.poller import DlmsPoller
from dlms_protocol.simulator.cosem_model import MeterModel, RegisterSpec, demo_model
from dlms_protocol.simulator.dlms_cli import DEMO_AUTH_KEY, DEMO_KEY
from dlms_protocol.simulator.dlms_meter import DlmsTcpMeter
from dlms_protocol.simulator.dlms_server import ServerSecurity, default_accounts

EK, AK = bytes.fromhex(DEMO_KEY), bytes.fromhex(DEMO_AUTH_KEY)
WAIT = 10.0  # answer time-out on a loaded test machine (never a speed assertion)


def dotted(ln: str) -> str:
    a, b, c, d, e, f = ln.split(".")
    return f"{a}-{b}:{c}.{d}.{e}.{f}"


@pytest.fixture
def meter():
    with DlmsTcpMeter(demo_model(), security=ServerSecurity(EK, AK)) as m:
        yield m


def hls(url: str, **kw) -> PollConfig:
    opts = dict(client_address=1, authentication="high_gmac", key=EK, auth_key=AK, obis=("1.8.0",), timeout=WAIT)
    opts.update(kw)
    return PollConfig(url, **opts)


def test_discovery_lists_every_object_with_scaler_unit_and_value(meter):
    model = meter.model
    poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT))
    data = poller.read(discover=True)
    assert {o.ln for o in poller.catalog} == {o.ln for o in model.objects()}
    got = {r.code: r for r in data.readings}
    for reg in model.registers:
        r = got[dotted(reg.ln)]
        assert r.value == Decimal(reg.value).scaleb(reg.scaler)
        assert r.scaler == reg.scaler
        assert r.unit == symbol(reg.unit)
    assert got["1-0:32.7.0.255"].value == Decimal("230.1") and got["1-0:32.7.0.255"].unit == "V"
    assert got["0-0:96.1.0.255"].value == model.serial
    assert got["0-0:1.0.0.255"].value == model.clock
    assert data.kind == "poll" and data.meter_id == model.serial and data.meter_time == model.clock
    # the one object client 16 may not read is reported with cause and fix, not dropped silently
    assert set(poller.unreadable) == {"0-0:96.1.1.255"}
    err = poller.unreadable["0-0:96.1.1.255"]
    assert err.result == 3 and "client 16" in str(err) and err.fix
    assert poller.stats.get("access_errors") == 1


def test_selected_objects_only_after_discovery(meter):
    poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT, obis=("1.8.0", "1-0:32.7.0")))
    first = poller.read()
    # (and the serial number: no code asked for names the meter, poller._identity_of)
    assert [r.code for r in first.readings] == ["1-0:1.8.0.255", "1-0:32.7.0.255", "0-0:96.1.0.255"]
    assert first.meter_id == "12345678"
    meter.model.set_value("1.0.1.8.0.255", 12345999)
    mark = len(meter.events)
    second = poller.read()
    assert second.get("1.8.0").value == Decimal(12345999)
    gets = [d for n, d in meter.events[mark:] if n == "get"]
    assert gets == ["1.0.1.8.0.255 attribute 2", "1.0.32.7.0.255 attribute 2",  # no object list, no scalers
                    "0.0.96.1.0.255 attribute 2"]


def test_lls_password_and_wrong_password(meter, caplog):
    caplog.set_level(logging.DEBUG)
    ok = DlmsPoller(PollConfig(meter.url, timeout=WAIT, client_address=32, authentication="low", password="12345678"))
    assert ok.read().get("1.8.0").value == Decimal(12345678)
    assert ok.unreadable == {"0-0:96.1.1.255": ok.unreadable["0-0:96.1.1.255"]}
    with pytest.raises(AssociationError) as exc:
        DlmsPoller(PollConfig(meter.url, timeout=WAIT, client_address=32, authentication="low",
                              password="87654321")).read()
    assert exc.value.diagnostic == 13 and "password" in exc.value.cause
    assert "87654321" not in str(exc.value) and "87654321" not in caplog.text and "12345678" not in caplog.text


def test_hls_gmac_keeps_the_invocation_counter_in_the_state_file(meter, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    state = tmp_path / "ic.json"
    first = DlmsPoller(hls(meter.url, state_file=str(state)))
    assert first.read().get("1.8.0").value == Decimal(12345678)
    assert first.read().get("1.8.0").value == Decimal(12345678)
    counter = first.config.invocation_counter
    assert counter > 0 and str(counter) in state.read_text()
    # a restart with the state file continues the counter, the meter accepts it
    again = DlmsPoller(hls(meter.url, state_file=str(state)))
    assert again.config.invocation_counter == counter
    assert again.read().get("1.8.0").value == Decimal(12345678)
    # without it (told not to read the meter's: a meter without the object) the counter starts at
    # 0 again, which the meter has seen: refused, and said so
    with pytest.raises(AuthenticationError) as exc:
        DlmsPoller(hls(meter.url, invocation_counter_ln="")).read()
    assert "invocation counter" in str(exc.value)
    assert "hls-ok" in meter.event_names() and "counter-replayed" in meter.event_names()
    for secret in (DEMO_KEY, DEMO_AUTH_KEY, DEMO_KEY.lower(), DEMO_AUTH_KEY.lower()):
        assert secret not in caplog.text and secret not in str(exc.value)
    assert DEMO_KEY.lower() not in repr(first.config) and EK.hex() not in repr(first.config)


def test_hls_gmac_without_a_state_file_continues_the_meter_s_invocation_counter(meter, caplog):
    """A restart without a state file (or one that was lost): the counter the meter has seen is
    read through the public client (0.0.43.1.0.255) and continued, instead of a refusal at every
    association until someone sets invocation_counter by hand."""
    caplog.set_level(logging.INFO, logger="dlms_protocol.poll")
    earlier = DlmsPoller(hls(meter.url))
    earlier.config.invocation_counter = 5000  # (another client, or this one before its restart)
    earlier._counter_known = True
    assert earlier.read().get("1.8.0").value == Decimal(12345678)
    seen = meter.model.frame_counter
    assert seen > 5000
    fresh = DlmsPoller(hls(meter.url))
    meter.model.set_value("1.0.1.8.0.255", 12345999)
    mark = len(meter.events)
    assert fresh.read().get("1.8.0").value == Decimal(12345999)
    assert fresh.config.invocation_counter > seen
    assert f"the meter's invocation counter (0.0.43.1.0.255) is {seen}: associating with {seen + 1}" in caplog.text
    names = [n for n, _ in meter.events[mark:]]
    assert "counter-replayed" not in names and "hls-ok" in names
    assert ("get", "0.0.43.1.0.255 attribute 2") in meter.events[mark:]
    # the next read needs no public read: the counter is known now
    mark = len(meter.events)
    assert fresh.read().get("1.8.0") is not None
    assert ("get", "0.0.43.1.0.255 attribute 2") not in meter.events[mark:]


def test_a_refused_counter_is_read_from_the_meter_for_the_next_association(meter, tmp_path):
    """A state file behind the meter (restored from a backup, or another client moved it on): the
    association is refused once, said so; the next read continues the meter's counter."""
    state = tmp_path / "ic.json"
    ahead = DlmsPoller(hls(meter.url))
    ahead.config.invocation_counter = 9000
    ahead._counter_known = True
    ahead.read()
    state.write_text('{"invocation_counter": 12}')
    poller = DlmsPoller(hls(meter.url, state_file=str(state)))
    with pytest.raises(AuthenticationError):
        poller.read()
    assert poller.read().get("1.8.0").value == Decimal(12345678)
    assert poller.config.invocation_counter > 9000 and str(poller.config.invocation_counter) in state.read_text()


def test_a_meter_that_gives_no_counter_keeps_the_configured_one(caplog):
    """No public client (or no such object): a warning that says what to set, and the association
    goes on with the configured counter."""
    caplog.set_level(logging.WARNING, logger="dlms_protocol.poll")
    accounts = default_accounts()
    del accounts[16]
    with DlmsTcpMeter(demo_model(), security=ServerSecurity(EK, AK), accounts=accounts) as m:
        poller = DlmsPoller(hls(m.url, invocation_counter=77))
        assert poller.read().get("1.8.0").value == Decimal(12345678)
    assert "cannot read the invocation counter from 0.0.43.1.0.255 through the public client" in caplog.text
    assert "associating with 77" in caplog.text and "state_file" in caplog.text


@pytest.mark.parametrize("which", ["key", "auth_key"])
def test_hls_gmac_wrong_key_is_reported_as_such(meter, which):
    bad = bytes(16)
    with pytest.raises(AuthenticationError) as exc:
        DlmsPoller(hls(meter.url, **{which: bad})).read()
    assert "key" in exc.value.cause and "auth_key" in exc.value.fix
    assert bad.hex() not in str(exc.value)
    assert "aarq-refused" in meter.event_names()


def test_wrong_client_address_and_missing_security_level(meter):
    with pytest.raises(AssociationError) as exc:
        DlmsPoller(PollConfig(meter.url, timeout=WAIT, client_address=17)).read()
    assert exc.value.diagnostic == 1 and "client address" in exc.value.fix
    with pytest.raises(AssociationError) as exc:
        DlmsPoller(PollConfig(meter.url, timeout=WAIT, client_address=32)).read()
    assert exc.value.diagnostic == 12 and "security level" in exc.value.cause


def test_object_not_readable_names_cause_and_fix(meter):
    poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT, obis=("0.0.96.1.1.255",)))
    with pytest.raises(AccessError) as exc:
        poller.read()
    assert "read-write denied" in exc.value.cause and "client 16" in exc.value.fix
    assert poller.stats.get("access_errors") == 1


def test_profile_generic_read_incrementally(meter):
    model = meter.model
    poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT, obis=("1.8.0",), profiles=("1.0.99.1.0.255",)))
    poller.read()
    rows = poller.last_profile_rows["1-0:99.1.0.255"]
    assert [r.time for r in rows] == [r.when for r in model.profile_rows]
    assert rows[0].values == (("1-0:1.8.0.255", Decimal(12340000), "Wh"), ("1-0:2.8.0.255", Decimal(2340000), "Wh"))
    poller.read()
    assert poller.last_profile_rows["1-0:99.1.0.255"] == []
    new = model.add_profile_row((12341000, 2341000))
    mark = len(meter.events)
    poller.read()
    rows = poller.last_profile_rows["1-0:99.1.0.255"]
    assert [(r.time, r.values[0][1]) for r in rows] == [(new.when, Decimal(12341000))]
    assert ("get-rows", "selector 1: 1 rows") in meter.events[mark:]  # only the new row went over the line
    assert rows[0].to_json()["values"]["1-0:1.8.0.255"] == 12341000  # a number, exactly (json_value)


#: a meter one hour east of this host, whatever the host's zone: the offsets never agree
EAST = timezone(datetime.now().astimezone().utcoffset() + timedelta(hours=1))  # type: ignore[operator]


def _zoned_rows(model: MeterModel, first: datetime, n: int) -> None:
    for i in range(n):
        model.add_profile_row((1000 + i, 2000 + i), first + timedelta(minutes=15 * i))


def test_profile_rows_of_a_meter_in_another_zone_are_all_read():
    """Audit: the last row's time was kept without its offset and the next range start sent in
    the host's offset; a meter an hour east of the host then answered the next two reads with
    nothing, and four rows were never handed out."""
    model = MeterModel(registers=demo_model().registers)
    model.clock = datetime(2026, 12, 2, 12, 5, tzinfo=EAST)
    _zoned_rows(model, datetime(2026, 12, 2, 11, 0, tzinfo=EAST), 5)
    with DlmsTcpMeter(model) as meter:
        poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT, obis=("1.8.0",), profiles=("99.1.0",)))
        got = []
        for _ in range(4):
            poller.read()
            got += [r.time for r in poller.last_profile_rows["1-0:99.1.0.255"]]
            model.add_profile_row((0, 0))
            model.add_profile_row((0, 0))
    assert got == [r.when for r in model.profile_rows[:-2]]  # every row once, in order (the last two: after)
    assert all(t.utcoffset() == EAST.utcoffset(None) for t in got)


def test_profile_rows_of_the_autumn_hour_that_repeats_are_all_read():
    """Audit: 02:00-02:45 come twice on the night summer time ends; the second ones (+01:00) were
    dropped as 'not after' the first ones (+02:00) by a comparison without the offsets."""
    summer, winter = timezone(timedelta(hours=2)), timezone(timedelta(hours=1))
    model = MeterModel(registers=demo_model().registers)
    model.clock = datetime(2026, 10, 25, 2, 50, tzinfo=summer)
    _zoned_rows(model, datetime(2026, 10, 25, 1, 45, tzinfo=summer), 5)
    with DlmsTcpMeter(model) as meter:
        poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT, obis=("1.8.0",), profiles=("99.1.0",)))
        poller.read()
        first = [r.time for r in poller.last_profile_rows["1-0:99.1.0.255"]]
        _zoned_rows(model, datetime(2026, 10, 25, 2, 0, tzinfo=winter), 5)
        poller.read()
        second = [r.time for r in poller.last_profile_rows["1-0:99.1.0.255"]]
    assert first == [r.when for r in model.profile_rows[:5]]
    assert second == [r.when for r in model.profile_rows[5:]]  # 02:00+01:00 ... 03:00+01:00


def test_a_register_whose_scaler_this_client_may_not_read_costs_no_other_value(caplog):
    """Audit: one register the public client may not read (its scaler refused) failed the whole
    poll: no value at all. It is now unreadable like a refused value, and never given unscaled;
    a profile column of it is empty. Its neighbour with a positive scaler prints plainly."""
    registers = [RegisterSpec("1.0.1.8.0.255", 12345678, 0, 30), RegisterSpec("1.0.2.8.0.255", 2345, 3, 30),
                 RegisterSpec("1.0.3.8.0.255", 98765, -3, 32, readers=(1,))]
    model = MeterModel(registers=registers, profile_columns=("1.0.1.8.0.255", "1.0.3.8.0.255"))
    model.add_profile_row((12345000, 98000))
    caplog.set_level(logging.WARNING)
    with DlmsTcpMeter(model) as meter:
        poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT, profiles=("99.1.0",)))
        data = poller.read(discover=True)
        (row,) = poller.last_profile_rows["1-0:99.1.0.255"]
        poller.read()
    got = {r.code: r.value for r in data.readings}
    assert got["1-0:1.8.0.255"] == Decimal(12345678) and got["1-0:2.8.0.255"] == Decimal(2345000)
    assert "1-0:3.8.0.255" not in got and "1-0:3.8.0.255" in poller.unreadable
    assert caplog.text.count("1.0.3.8.0.255 attribute 3") == 1  # warned once, not every cycle
    assert dict((c, v) for c, v, _ in row.values) == {"1-0:1.8.0.255": Decimal(12345000), "1-0:3.8.0.255": None}
    from dlms_protocol.poll.cli import print_table
    out = io.StringIO()
    print_table(data, out)
    assert " 2345000  Wh" in out.getvalue() and "E+" not in out.getvalue()


def test_what_the_meter_refused_this_client_is_not_asked_for_every_cycle():
    """Audit: an object this client may not read stayed in every cycle's request; its refusal in
    the GET with-list answer made every cycle read all objects again one by one (on RS485 at
    9600 Bd 3.8 s instead of 2.5 s). Asked once, refused, then left out; --list asks again."""
    registers = [RegisterSpec("1.0.1.8.0.255", 12345678, 0, 30), RegisterSpec("1.0.2.8.0.255", 2345, 0, 30),
                 RegisterSpec("1.0.3.8.0.255", 98765, -3, 32, readers=(1,))]
    with DlmsTcpMeter(MeterModel(registers=registers)) as meter:
        poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT, obis=("1.8.0", "2.8.0", "3.8.0")))
        denied = []
        for discover in (False, False, False, True):
            mark = len(meter.events)
            data = poller.read(discover=discover)
            assert {r.code for r in data.readings} >= {"1-0:1.8.0.255", "1-0:2.8.0.255"}
            denied.append(sum(1 for n, d in meter.events[mark:] if n == "get-denied" and d.startswith("1.0.3.8.0")))
        only = DlmsPoller(PollConfig(meter.url, timeout=WAIT, obis=("3.8.0",)))
        with pytest.raises(AccessError):
            only.read()
        with pytest.raises(AccessError):
            only.read()  # (nothing readable asked for: the refusal again, without asking)
    assert denied[0] >= 1 and denied[1:3] == [0, 0] and denied[3] >= 1  # refused, left out, asked again by --list


def test_no_answer_to_the_association_request():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    t.start()
    port = listener.getsockname()[1]
    try:
        with pytest.raises(NoResponseError) as exc:
            DlmsPoller(PollConfig(f"tcp://127.0.0.1:{port}", timeout=0.5)).read()
        assert "AARQ" in exc.value.cause and "4059" in exc.value.fix
    finally:
        listener.close()
        for conn, _ in accepted:
            conn.close()


def test_nothing_listening_is_a_transport_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(TransportError) as exc:
        DlmsPoller(PollConfig(f"tcp://127.0.0.1:{port}")).read()
    # the meter's network port, as the user wrote it; not ser2net or an adapter (audit)
    assert f"tcp://127.0.0.1:{port}" in exc.value.cause and "socket://" not in exc.value.cause
    assert "4059" in exc.value.fix and "ser2net" not in exc.value.fix


def test_a_meter_id_this_client_may_not_read_is_no_error(caplog):
    """The serial number is read for the meter id only (no code asked for names the meter): when
    this client may not read it, that is no access error and no warning, and it is not asked for
    again; the next identity object is tried once, then none."""
    from dlms_protocol.simulator.cosem_model import CosemObject

    model = demo_model()
    plain = model.objects

    def objects():  # the serial number readable by client 1 only, like the equipment identifier
        return [CosemObject(o.class_id, o.ln, o.attributes, readers=(1,)) if o.ln == "0.0.96.1.0.255" else o
                for o in plain()]

    model.objects = objects  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING)
    with DlmsTcpMeter(model) as meter:
        poller = DlmsPoller(PollConfig(meter.url, timeout=WAIT, obis=("1.8.0",)))
        denied = []
        for _ in range(3):
            mark = len(meter.events)
            data = poller.read()
            assert [r.code for r in data.readings] == ["1-0:1.8.0.255"] and data.meter_id is None
            denied.append({d.split(" attribute")[0] for n, d in meter.events[mark:] if n == "get-denied"})
    # one cycle each (a with-list answer with a refused element is read again one by one), then none
    assert denied == [{"0.0.96.1.0.255"}, {"0.0.96.1.1.255"}, set()]
    assert poller.stats.get("access_errors") == 0 and poller.unreadable == {}
    assert "96.1" not in caplog.text
