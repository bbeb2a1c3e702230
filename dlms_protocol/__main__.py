"""``python -m dlms_protocol``: see cli.py.

The cyclic garbage collector is paused before the first module of ours loads and resumed by
``cli.loading`` once start-up is over (the package's ``__init__`` imports nothing, so this runs
first).
"""
import gc
import sys

_COLLECTING = gc.isenabled()
gc.disable()
from . import cli  # noqa: E402

cli.RESUME_GC = _COLLECTING
sys.exit(cli.main())
