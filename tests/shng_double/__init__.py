"""A SmartHomeNG 1.11 test double that follows ../shared/docs/smarthomeng-plugin-api.md.

Use ``SmartHome(plugins_dir)`` to load plugin sections and items exactly as the core does
(parameter validation, item attribute validation, typed-item casting, scheduler semantics,
multi-instance attributes, ``.conf`` parsing), then ``start()``/``stop()``.
"""
from __future__ import annotations

from .core import HttpModule, SmartHome, install, load_plugin_package  # noqa: F401
from .conf import parse_conf, parse_conf_text  # noqa: F401
