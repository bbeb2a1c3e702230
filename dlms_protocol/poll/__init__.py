"""DLMS/COSEM polling: a client on gurux-dlms over the project's transport (optical mode E, RS485 HDLC,
TCP wrapper), registered as the pipeline source ``poll``. See ``poller.DlmsPoller`` and ``source.PollSource``."""
from __future__ import annotations
