# dbus-dlms-meter: sourced by boot.sh and uninstall.sh (POSIX sh / busybox ash).
# Venus OS mounts / read-only; a change under /etc (the udev rule) needs it writable for a
# moment. with_writable_root CMD ARGS... opens /, runs the command and closes / again if it
# was read-only before. Needs MOUNTS and REMOUNT_RW (defaults in the callers, install.conf).
with_writable_root() {
    _ro=no
    if awk '$2 == "/" { print $4 }' "$MOUNTS" | grep -q '^ro'; then
        _ro=yes
        if [ -x "$REMOUNT_RW" ]; then
            "$REMOUNT_RW"
        else
            mount -o remount,rw /
        fi
    fi
    "$@"
    _rc=$?
    [ "$_ro" = yes ] && mount -o remount,ro / 2>/dev/null
    return $_rc
}
