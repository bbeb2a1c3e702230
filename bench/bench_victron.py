"""Benchmark: the Victron D-Bus bridge as Venus OS runs it, end to end.

Set-up (all real parts): a private ``dbus-daemon``, the localsettings stand-in and a Venus-style
client from ``tests/dbus_fixtures.py``, the standalone service as its own process
(``python -m dlms_protocol victron --config``) listening on a pseudo-terminal, and a simulated
Iskraemeco AM550 (HDLC, AES-GCM security 0x30, the 23-value Reduxi "live" list) pushing into it.

Measured:

* **latency**: from writing the *last byte* of a push frame to the pty until the client's
  D-Bus connection receives the resulting ``ItemsChanged`` (the rest of the frame is written
  10 ms earlier, as on a real line where bytes trickle in). Median and p99 over ``--frames``
  frames (default 1000). Reference: the lower bound of the two hops alone (a pty byte to a
  blocked pyserial reader, plus one ``ItemsChanged`` from a bare BusItem exporter to the client).
* **CPU per frame** of the service process (user+system, from /proc per-thread schedstat).
  Reference: decoding alone (``PushDecoder.feed`` in this process), so the ratio shows what the
  bridge and the bus add on top of the decoder.
* **idle CPU** with no frames, after the meter went stale: percent of one core (target < 0.1 %).
* **memory** of the service: RSS and PSS. Reference: a bare ``python3`` interpreter.

Quick by default (1000 frames, 20 s idle); ``--full`` uses 5000 frames and 120 s idle.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from dlms_protocol.config import ListenerConfig  # noqa: E402
from dlms_protocol.dlms.decoder import PushDecoder  # noqa: E402
from dlms_protocol.simulator.pty import PtyLink  # noqa: E402
from dlms_protocol.simulator.push import PushSimulator  # noqa: E402

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
PROFILE = "si-sodo-reduxi-live23"
TARGET_MEDIAN_MS = 5.0
TARGET_IDLE_PCT = 0.1


# ------------------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float:
    """User+system CPU of every thread of ``pid`` (ns resolution via schedstat when available)."""
    total = 0.0
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                pass
        if total:
            return total
    except OSError:
        pass
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> Tuple[int, Optional[int]]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    pss = None
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def pct(values: List[float], q: float) -> float:
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return s[k]


# ------------------------------------------------------------------ lower bounds
def pty_hop(n: int) -> List[float]:
    """One byte written to a pty master until a pyserial reader blocked on the slave returns."""
    import serial

    link = PtyLink(baudrate=115200, bytesize=8, parity="N")
    port = serial.Serial(link.port, 115200, timeout=1.0)
    out: List[float] = []
    got = threading.Event()
    stamp = [0.0]
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = port.read(1)
            except (serial.SerialException, OSError):
                return
            if data:
                stamp[0] = time.perf_counter()
                got.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    time.sleep(0.1)
    for _ in range(n):
        got.clear()
        t0 = time.perf_counter()
        link.raw_write(b"\x7e")
        if got.wait(1.0):
            out.append(stamp[0] - t0)
        time.sleep(0.002)
    stop.set()
    link.raw_write(b"\x00")  # wake the reader so it sees stop
    t.join(2)
    port.close()
    link.close()
    return out


def dbus_hop(address: str, client: Any, n: int) -> List[float]:
    """One ItemsChanged from a bare exporter (update() called from another thread) to the client."""
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus

    from dbus_fixtures import LoopThread, close_bus
    from dlms_protocol.victron.busitem import BusItemService

    lt = LoopThread("hop-exporter")

    async def connect() -> MessageBus:
        return await MessageBus(bus_address=address, bus_type=BusType.SESSION).connect()

    bus = lt.run(connect())
    svc = BusItemService("com.victronenergy.vebus.bench_hop")
    svc.add_path("/DeviceInstance", 1)
    svc.add_path("/Ac/Power", 0.0)
    svc.attach(bus)
    lt.run(svc.register())
    got = threading.Event()
    stamp = [0.0]
    old = client.on_items
    client.on_items = lambda t, ch: (stamp.__setitem__(0, t), got.set()) if "/Ac/Power" in ch else None
    out: List[float] = []
    for i in range(n):
        got.clear()
        t0 = time.perf_counter()
        lt.call(svc.update, {"/Ac/Power": float(i + 1)})
        if got.wait(1.0):
            out.append(stamp[0] - t0)
    client.on_items = old
    lt.run(close_bus(bus))
    lt.close()
    return out


def decode_cpu(frames: List[bytes]) -> float:
    """CPU per frame of what the listener does before the bridge: decode into a MeterData."""
    dec = PushDecoder(ListenerConfig(port="bench", key=EK, auth_key=AK))
    dec.quiet = True
    for f in frames[:20]:
        for m in dec.feed(f):
            m.to_meter_data()
    t0 = time.process_time()
    got = 0
    for f in frames:
        for m in dec.feed(f):
            m.to_meter_data()
            got += 1
    return (time.process_time() - t0) / max(1, got)


def bare_python_rss() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    time.sleep(1.0)
    rss, _ = memory_kb(proc.pid)
    proc.kill()
    proc.wait()
    return rss


# ------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="5000 frames, 120 s idle")
    ap.add_argument("--frames", type=int, help="frames for the latency run (default 1000, --full 5000)")
    ap.add_argument("--idle", type=float, help="seconds of idle measurement (default 20, --full 120)")
    args = ap.parse_args()
    frames_n = args.frames or (5000 if args.full else 1000)
    idle_s = args.idle or (120.0 if args.full else 20.0)

    from dbus_fixtures import DbusDaemon, SettingsStandIn, VenusClient

    daemon = DbusDaemon()
    settings = SettingsStandIn(daemon.address)
    client = VenusClient(daemon.address)
    sim = PushSimulator(wrapper="hdlc", key=EK, auth_key=AK, security=0x30, layout="profile", profile=PROFILE,
                        seed=5, interval=1.0, invocation_counter=1000)
    link = PtyLink(baudrate=115200, bytesize=8, parity="N")
    tmp = Path(tempfile.mkdtemp(prefix="bench-victron-"))
    cfg = tmp / "dlms-meter.ini"
    cfg.write_text(f"[meter]\nport = {link.port}\nbaudrate = 115200\nparity = N\nkey = {EK.hex()}\n"
                   f"auth_key = {AK.hex()}\n\n[victron]\nbus = {daemon.address}\ntimeout = 5\n\n"
                   "[logging]\nlevel = warning\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    log = (tmp / "service.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "dlms_protocol", "victron", "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    rows: List[Tuple[str, str, str, str, str]] = []
    failed = False
    try:
        got = threading.Event()
        stamp = [0.0]
        client.on_items = lambda t, ch: (stamp.__setitem__(0, t), got.set())  # every push changes values

        def push(frame: bytes) -> Optional[float]:
            got.clear()
            link.raw_write(frame[:-1])
            time.sleep(0.010)
            t0 = time.perf_counter()
            link.raw_write(frame[-1:])
            if not got.wait(2.0):
                return None
            return stamp[0] - t0

        # warm-up: until the service is registered and has seen a few frames
        end = time.monotonic() + 60
        while client.service("grid") is None and time.monotonic() < end:
            push(sim.emit())
            time.sleep(0.05)
        if client.service("grid") is None:
            print("the service did not register; log:\n" + (tmp / "service.log").read_text(), file=sys.stderr)
            return 1
        for _ in range(20):
            push(sim.emit())

        frames = [sim.emit() for _ in range(frames_n)]
        lat: List[float] = []
        lost = 0
        cpu0 = cpu_seconds(proc.pid)
        for f in frames:
            d = push(f)
            if d is None:
                lost += 1
            else:
                lat.append(d)
        cpu_frame = (cpu_seconds(proc.pid) - cpu0) / frames_n
        rss, pss = memory_kb(proc.pid)

        # idle: wait until the meter went stale (time-out 5 s), then measure
        client.wait_for(lambda c: c.value(c.service("grid") or "", "/Connected") == 0, 30)
        time.sleep(1.0)
        c0, w0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_s)
        idle = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - w0) * 100.0

        # references
        hop_pty = pty_hop(300)
        hop_bus = dbus_hop(daemon.address, client, 300)
        lower = statistics.median(hop_pty) + statistics.median(hop_bus)
        lower99 = pct(hop_pty, 0.99) + pct(hop_bus, 0.99)
        ref_sim = PushSimulator(wrapper="hdlc", key=EK, auth_key=AK, security=0x30, layout="profile",
                                profile=PROFILE, seed=9, invocation_counter=50000)
        dec_cpu = decode_cpu([ref_sim.emit() for _ in range(300)])
        bare = bare_python_rss()

        med, p99 = statistics.median(lat) * 1e3, pct(lat, 0.99) * 1e3
        rows = [
            ("latency median (last byte -> ItemsChanged)", f"{med:.2f} ms",
             f"{lower * 1e3:.2f} ms (pty + D-Bus hops)", f"{med / (lower * 1e3):.1f}x",
             f"< {TARGET_MEDIAN_MS:g} ms: {'ok' if med < TARGET_MEDIAN_MS else 'MISSED'}"),
            ("latency p99", f"{p99:.2f} ms", f"{lower99 * 1e3:.2f} ms", f"{p99 / (lower99 * 1e3):.1f}x",
             f"{len(lat)} frames, {lost} lost"),
            ("CPU per frame (service process)", f"{cpu_frame * 1e3:.2f} ms",
             f"{dec_cpu * 1e3:.2f} ms (decode to MeterData)",
             f"{cpu_frame / dec_cpu:.1f}x", "user+system, all threads"),
            ("idle CPU, no frames", f"{idle:.3f} %", f"{TARGET_IDLE_PCT} % (target)", f"{idle / TARGET_IDLE_PCT:.2f}x",
             f"{idle_s:g} s, one core = 100 %"),
            ("resident memory (RSS)", f"{rss / 1024:.1f} MB", f"{bare / 1024:.1f} MB (bare python3)",
             f"{rss / bare:.1f}x", f"PSS {pss / 1024:.1f} MB" if pss else ""),
        ]
        failed = lost > 0 or med >= TARGET_MEDIAN_MS or idle >= TARGET_IDLE_PCT
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        link.close()
        client.stop()
        settings.stop()
        daemon.stop()

    print(f"Victron D-Bus bridge, end to end (Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
          f"AM550 HDLC 0x30 {PROFILE}, {frames_n} frames)")
    widths = [max(len(r[i]) for r in rows + [("metric", "ours", "reference", "ratio", "note")]) for i in range(5)]
    head = ("metric", "ours", "reference", "ratio", "note")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
