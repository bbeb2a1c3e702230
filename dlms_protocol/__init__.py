"""dlms_protocol: smart-meter reading without SmartHomeNG.

* IEC 62056-21 optical readout (``iec62056_21``): sign-on, modes A/B/C/E, baud switching, BCC.
* DLMS/COSEM push listening (``dlms``): HDLC, M-Bus, wrapper, raw APDU, GBT, AES-GCM.
* Sinks stay outside: the SmartHomeNG plugin (the package this directory sits in), the Victron
  D-Bus bridge (``victron``) and the CLI (``python -m dlms_protocol``).

This package uses relative imports only, so it works as ``dlms_protocol`` standalone and as
``plugins.dlms.dlms_protocol`` inside SmartHomeNG.

The package re-exports the errors, ``MeterData``, ``Reading``, ``Statistics`` and ``Obis``, each
imported on first use (PEP 562): importing the package itself loads nothing, so that
``python -m dlms_protocol`` can pause the garbage collector before its modules load (``__main__``).
"""
import os

__version__ = "2.0.0"
#: the package's data folder (profiles, tables): os.path, not pathlib, which no command's start-up pays for
DATA_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "data")

#: re-exported names (besides the errors) and the module each lives in
_EXPORTS = {"MeterData": "model", "Reading": "model", "Statistics": "model", "Obis": "obis"}
_SUBMODULES = ("errors", "model", "obis")  # bound here before, by the eager imports


def __getattr__(name: str) -> object:
    """A re-exported name (or ``__all__``), imported from its module on first use."""
    from importlib import import_module

    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    errors = import_module(".errors", __name__)
    if name == "__all__":
        value: object = [*errors.__all__, *_EXPORTS, "__version__"]
    elif name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    elif name in errors.__all__:
        value = getattr(errors, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
