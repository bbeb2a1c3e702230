"""Victron Venus OS D-Bus grid-meter bridge (dbus-fast)."""
