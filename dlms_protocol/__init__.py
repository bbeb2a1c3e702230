"""dlms_protocol: smart-meter reading without SmartHomeNG.

* IEC 62056-21 optical readout (``iec62056_21``): sign-on, modes A/B/C/E, baud switching, BCC.
* DLMS/COSEM push listening (``dlms``): HDLC, M-Bus, wrapper, raw APDU, GBT, AES-GCM.
* Sinks stay outside: the SmartHomeNG plugin (the package this directory sits in), the Victron
  D-Bus bridge (``victron``) and the CLI (``python -m dlms_protocol``).

This package uses relative imports only, so it works as ``dlms_protocol`` standalone and as
``plugins.dlms.dlms_protocol`` inside SmartHomeNG.
"""
from .errors import *  # noqa: F401,F403
from .model import MeterData, Reading, Statistics  # noqa: F401
from .obis import Obis  # noqa: F401

__version__ = "2.0.0"
