#!/bin/sh
# dbus-dlms-meter boot hook, called from /data/rc.local at every boot (install.sh adds the line).
# /service is in RAM on Venus OS, so the service link is gone after a reboot; a firmware update
# also replaces /etc, so the udev rule that keeps serial-starter off our port is re-applied here.
NAME=dbus-dlms-meter
BASE=$(cd -P "$(dirname "$0")" && pwd -P)
SERVICE_ROOT=/service
UDEV_DIR=/etc/udev/rules.d
MOUNTS=/proc/mounts
REMOUNT_RW=/opt/victronenergy/swupdate-scripts/remount-rw.sh
TTY=""
[ -f "$BASE/install.conf" ] && . "$BASE/install.conf"
. "$BASE/rootfs.sh"

RULE="$BASE/udev/zz-$NAME.rules"
if [ -f "$RULE" ] && ! cmp -s "$RULE" "$UDEV_DIR/zz-$NAME.rules"; then
    with_writable_root cp "$RULE" "$UDEV_DIR/zz-$NAME.rules"
    udevadm control --reload-rules 2>/dev/null || true
    if [ -n "$TTY" ] && [ -e "/dev/$TTY" ]; then
        # serial-starter may already hold the port: stop it there, then let udev re-announce the port
        [ -x /opt/victronenergy/serial-starter/stop-tty.sh ] && /opt/victronenergy/serial-starter/stop-tty.sh "$TTY"
        udevadm trigger --action=add "/sys/class/tty/$TTY" 2>/dev/null || true
    fi
fi

mkdir -p "$SERVICE_ROOT"
if [ ! -L "$SERVICE_ROOT/$NAME" ] && [ ! -e "$SERVICE_ROOT/$NAME" ]; then
    ln -s "$BASE/service" "$SERVICE_ROOT/$NAME"
fi
exit 0
