#!/bin/sh
# Remove dbus-dlms-meter: stop the service, remove its link, boot hook and udev rule.
#   sh /data/dbus-dlms-meter/uninstall.sh           keep /data/dbus-dlms-meter (configuration)
#   sh /data/dbus-dlms-meter/uninstall.sh --purge   delete /data/dbus-dlms-meter as well
# The VRM instance stays in localsettings (Settings/Devices/dlms_*), so a re-install gets it back.
NAME=dbus-dlms-meter
BASE=$(cd -P "$(dirname "$0")" && pwd -P)
[ -f "$BASE/dlms_protocol/__init__.py" ] || BASE=${DLMS_METER_DIR:-/data/$NAME}
SERVICE_ROOT=/service
RC_LOCAL=/data/rc.local
UDEV_DIR=/etc/udev/rules.d
MOUNTS=/proc/mounts
REMOUNT_RW=/opt/victronenergy/swupdate-scripts/remount-rw.sh
[ -f "$BASE/install.conf" ] && . "$BASE/install.conf"
. "$BASE/rootfs.sh"
PURGE=no
[ "${1:-}" = "--purge" ] && PURGE=yes

if [ -L "$SERVICE_ROOT/$NAME" ] || [ -e "$SERVICE_ROOT/$NAME" ]; then
    # drop the link first (so svscan does not start it again), then stop the driver and its
    # logger and let their supervise processes exit (daemontools' way to remove a service)
    rm -f "$SERVICE_ROOT/$NAME"
    svc -dx "$BASE/service" "$BASE/service/log" 2>/dev/null
fi
if [ -f "$RC_LOCAL" ]; then
    grep -v "# $NAME\$" "$RC_LOCAL" > "$RC_LOCAL.tmp"
    cat "$RC_LOCAL.tmp" > "$RC_LOCAL"
    rm -f "$RC_LOCAL.tmp"
fi
if [ -f "$UDEV_DIR/zz-$NAME.rules" ]; then
    # the root file system is read-only on Venus OS: open it for the change and close it again
    with_writable_root rm -f "$UDEV_DIR/zz-$NAME.rules"
    udevadm control --reload-rules 2>/dev/null || true
    echo "$NAME: udev rule removed; replug the adapter (or reboot) to give the port back to serial-starter"
fi
if [ "$PURGE" = yes ]; then
    rm -rf "$BASE"
    echo "$NAME: removed $BASE"
else
    echo "$NAME: service removed; files (and your configuration) are still in $BASE"
fi
