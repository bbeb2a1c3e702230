"""``python -m dlms_protocol``: see cli.py."""
import sys

from .cli import main

sys.exit(main())
