"""The terminal as a pipeline ``Output``: the CLI's printer (text blocks, or JSON per snapshot).

Why an output: the commands that stream readings (``listen`` for DLMS push, SML and push-only
D0; ``poll --cycle``) run ``Source → Pipeline → PrintOutput`` like the plugin and ``serve``, so a
terminal shows what items, D-Bus and MQTT get: enriched once, derived values marked, the same
staleness rule. The JSON is the one form of ``jsonform.meter_data_json``. One-shot commands call
``format`` of the same class. print() is allowed here: this module is the user's terminal.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any, Callable, Dict, Optional, TextIO

from .errors import ConfigurationError
from .jsonform import meter_data_json
from .model import MeterData
from .pipeline import Health, Output, Pipeline


def message_text(data: MeterData) -> str:
    """The readable block of a snapshot (a push message's rendering, a readout's text) and a blank line."""
    return data.text + "\n"


class PrintOutput(Output):
    """Prints every snapshot to ``stream`` (stdout): ``text(data)``, or with ``as_json`` the JSON
    form (one line; ``indent`` for a pretty block). Health changes go to ``errors`` (stderr) as
    ``# stale: cause`` lines: stale and back to ok always, errors only with ``show_errors``
    (a source that logs its own errors would say them twice). ``count``: ``done`` is set after
    that many snapshots (0: never) and later ones are not printed; ``done`` is also set when
    the reader closed the pipe (``closed``; the command then ends with ``quiet_stdout``).
    """

    name = "print"

    def __init__(self, as_json: bool = False, *, text: Callable[[MeterData], str] = message_text,
                 json_form: Callable[[MeterData], Dict[str, Any]] = meter_data_json, indent: Optional[int] = None,
                 stream: Optional[TextIO] = None, errors: Optional[TextIO] = None, show_errors: bool = True,
                 count: int = 0, flush: bool = True) -> None:
        self.as_json = as_json
        self._text = text
        self._json_form = json_form
        self.indent = indent
        self._stream = stream
        self._errors = errors
        self.show_errors = show_errors
        self.count = max(0, int(count))
        self.printed = 0
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._said_bad = False  # a stale/error line was printed: say when data is back
        self.closed = False  # the reader of the stream went away (done is set too)
        #: each snapshot is flushed at once (a live stream); False for a one-shot command, whose
        #: output is flushed at its end (one write per buffer instead of one per snapshot)
        self.flush = flush

    def format(self, data: MeterData) -> str:
        """What ``publish`` prints for ``data`` (without the final newline print adds)."""
        if self.as_json:
            return json.dumps(self._json_form(data), ensure_ascii=False, indent=self.indent)
        return self._text(data)

    def publish(self, data: MeterData) -> None:
        text = self.format(data)
        with self._lock:
            if self.done.is_set():
                return
            try:  # the stream is looked up now, not bound at import: a test's or a redirect's
                stream = self._stream or sys.stdout
                stream.write(text + "\n")
                if self.flush:
                    stream.flush()
            except BrokenPipeError:  # `listen --json | head -1`: the reader went away, not an error
                self.closed = True
                self.done.set()
                return
            self.printed += 1
            if self.count and self.printed >= self.count:
                self.done.set()

    def publish_health(self, health: Health) -> None:
        if health.state == Health.OK:
            line = "# ok: verified data again" if self._said_bad else ""
            self._said_bad = False
        elif health.state == Health.STALE or (health.state == Health.ERROR and self.show_errors):
            line = f"# {health.state}: {health.cause}"
            self._said_bad = True
        else:
            return
        if line:
            print(line, file=self._errors or sys.stderr, flush=True)

    def status(self) -> Dict[str, Any]:
        return {"printed": self.printed, "json": self.as_json}


def quiet_stdout() -> None:
    """After the reader closed stdout: keep the interpreter's final flush from complaining.

    What is still buffered goes to /dev/null through the same descriptor (the recipe of the
    Python docs' note on SIGPIPE), so neither the flush at exit nor a later print fails.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test's stream)
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until the process ends
        except OSError:
            pass


def offline_json(data: MeterData) -> Dict[str, Any]:
    """The JSON form without the receive time: decoding the same input prints the same every run."""
    return meter_data_json(data, received=False)


def decode_printer(as_json: bool) -> PrintOutput:
    """The printer of ``decode`` (push and SML): ``listen``'s text and JSON without the receive
    time, written buffered (the command flushes stdout at its end; a closed pipe raises there)."""
    return PrintOutput(as_json, json_form=offline_json, flush=False)


def show_message(message: Any, printer: PrintOutput) -> None:
    """One decoded message (``decode``) through ``printer`` (``decode_printer``)."""
    printer.publish(message.to_meter_data())
    if printer.closed:  # the command ends as for any closed pipe (cli.main: status 0, no message)
        raise BrokenPipeError


_YES = ("1", "yes", "true", "on")
_NO = ("", "0", "no", "false", "off")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _YES or text in _NO:
        return text in _YES
    raise ConfigurationError(f"print option json={value!r} is no yes/no value", "write json = yes or json = no")


def _indent(value: Any) -> Optional[int]:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"print option indent={value!r} is no number",
                                 "leave it out (one line per snapshot) or write e.g. indent = 2") from None


def run_until_interrupted(pipeline: Pipeline, keep_going: Callable[[], bool], stop_timeout: float = 2.0,
                          done: Optional[threading.Event] = None) -> None:
    """Start ``pipeline`` and run until Ctrl-C, SIGTERM, ``done`` is set or ``keep_going()`` turns
    false; then stop it.

    Ctrl-C sets the event instead of raising KeyboardInterrupt wherever the main thread happens
    to be (inside ``pipeline.start()``, a lock, a thread start): the pipeline always stops
    cleanly and the command ends, however early or late the signal comes.
    """
    import signal  # only the streaming commands need it, not decode's start-up

    stop = done if done is not None else threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        pipeline.start()
        while keep_going() and not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        pipeline.stop(stop_timeout)


def make_print_output(json: Any = False, indent: Any = None, **options: Any) -> PrintOutput:
    """The ``"print"`` entry of ``pipeline.OUTPUTS`` (a ``[print]`` section of ``serve``): the
    terminal printer; ``json`` and ``indent`` may be INI strings."""
    return PrintOutput(_flag(json), indent=_indent(indent), **options)


class LineFound(Output):
    """Says once on stderr which line the search found, as the options that skip it next time."""

    name = "line search"

    def __init__(self, source: Any) -> None:  # (a push source with a line search: sml.source.SmlSource)
        self.source = source
        self.said = False

    def publish(self, data: MeterData) -> None:
        listener = self.source.listener
        if self.said or listener is None or getattr(listener, "searching", True):
            return
        self.said = True
        c = listener.config
        print(f"line found: {c.baudrate} Bd {c.bytesize}{c.parity}{c.stopbits}; next time add --baudrate "
              f"{c.baudrate} --parity {c.parity} --bytesize {c.bytesize} to skip the search",
              file=sys.stderr, flush=True)


__all__ = ["PrintOutput", "LineFound", "make_print_output", "run_until_interrupted", "message_text", "offline_json",
           "show_message", "decode_printer", "quiet_stdout"]
