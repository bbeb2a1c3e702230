#!/bin/sh
# Install (or update) dbus-dlms-meter on Venus OS.
#
# Copies the driver to /data/dbus-dlms-meter (only /data survives firmware updates), creates its
# daemontools service, links it into /service (RAM on Venus OS) and re-creates that link at every
# boot from /data/rc.local. An existing configuration is kept.
#
#   sh venus/install.sh                 install or update
#   sh venus/install.sh --udev          also keep serial-starter off the meter's USB adapter
#   sh venus/install.sh --from FILE     start from dbus-dlms-meter's config.py (read, never executed)
#
# Paths can be changed for tests: DLMS_METER_DIR, DLMS_METER_SERVICE_ROOT, DLMS_METER_RC_LOCAL,
# DLMS_METER_UDEV_DIR, DLMS_METER_PYTHON, DLMS_METER_OPKG.
set -e
NAME=dbus-dlms-meter
SRC=$(cd -P "$(dirname "$0")/.." && pwd -P)
DEST=${DLMS_METER_DIR:-/data/$NAME}
SERVICE_ROOT=${DLMS_METER_SERVICE_ROOT:-/service}
RC_LOCAL=${DLMS_METER_RC_LOCAL:-/data/rc.local}
UDEV_DIR=${DLMS_METER_UDEV_DIR:-/etc/udev/rules.d}
PYTHON=${DLMS_METER_PYTHON:-python3}
OPKG=${DLMS_METER_OPKG:-opkg}

say() { echo "$NAME: $*"; }
die() { echo "$NAME: error: $*" >&2; exit 1; }

UDEV=no
FROM=""
while [ $# -gt 0 ]; do
    case "$1" in
        --udev) UDEV=yes ;;
        --from) shift; FROM=${1:-}; [ -n "$FROM" ] || die "--from needs a file" ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) die "unknown option $1 (try --help)" ;;
    esac
    shift
done

[ -d "$SRC/dlms_protocol" ] || die "dlms_protocol/ not found in $SRC: run install.sh from the unpacked repository"

# 1. Python and the libraries Venus OS ships (dbus-fast since v3.50). cryptography is not in the
#    stock image: it is needed only for a meter with a key and installed in step 3b then.
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
    || die "Python 3.8 or newer is needed (Venus OS 3.00 or newer)"
missing=$("$PYTHON" -c '
import importlib
for mod, how in (("serial", "opkg install python3-pyserial"),
                 ("dbus_fast", "opkg install python3-dbus-fast   (Venus OS < 3.50: opkg install python3-pip; pip3 install dbus-fast)")):
    try:
        importlib.import_module(mod)
    except ImportError:
        print("    " + mod + ": " + how)
')
if [ -n "$missing" ]; then
    say "these Python modules are missing:"
    echo "$missing"
    die "install them (opkg update first) and run install.sh again"
fi

# 2. files
say "installing into $DEST"
mkdir -p "$DEST"
rm -rf "$DEST/dlms_protocol.new"
cp -R "$SRC/dlms_protocol" "$DEST/dlms_protocol.new"
find "$DEST/dlms_protocol.new" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -rf "$DEST/dlms_protocol"
mv "$DEST/dlms_protocol.new" "$DEST/dlms_protocol"
# byte-compile once here, so no start of the service compiles ~19k lines on a GX CPU (and a
# read-only or full /data never makes every start pay for it)
"$PYTHON" -m compileall -q "$DEST/dlms_protocol" >/dev/null || say "note: byte-compiling failed; the service compiles at start instead"
mkdir -p "$DEST/service/log" "$DEST/udev"
cp "$SRC/venus/service/run" "$DEST/service/run"
cp "$SRC/venus/service/log/run" "$DEST/service/log/run"
cp "$SRC/venus/boot.sh" "$SRC/venus/uninstall.sh" "$SRC/venus/rootfs.sh" "$DEST/"
cp "$SRC/venus/udev/zz-dbus-dlms-meter.rules.in" "$DEST/udev/"
cp "$SRC/venus/dlms-meter.ini.example" "$DEST/"
chmod 755 "$DEST/service/run" "$DEST/service/log/run" "$DEST/boot.sh" "$DEST/uninstall.sh"
cat > "$DEST/install.conf" <<CONF
# written by install.sh; read by boot.sh and uninstall.sh
SERVICE_ROOT="$SERVICE_ROOT"
RC_LOCAL="$RC_LOCAL"
UDEV_DIR="$UDEV_DIR"
CONF

# 3. configuration: keep an existing one
if [ -n "$FROM" ]; then
    [ -f "$FROM" ] || die "$FROM does not exist"
    if [ -f "$DEST/dlms-meter.ini" ]; then
        say "note: $DEST/dlms-meter.ini exists and wins over config.py; remove it to use $FROM"
    fi
    cp "$FROM" "$DEST/config.py"
    chmod 600 "$DEST/config.py"   # it holds the keys
    say "using dbus-dlms-meter settings from $FROM (copied to $DEST/config.py)"
elif [ ! -f "$DEST/dlms-meter.ini" ] && [ ! -f "$DEST/config.py" ]; then
    cp "$SRC/venus/dlms-meter.ini.example" "$DEST/dlms-meter.ini"
    chmod 600 "$DEST/dlms-meter.ini"
    say "created $DEST/dlms-meter.ini: set port (and key) there"
fi
CONFIG="$DEST/dlms-meter.ini"
[ -f "$CONFIG" ] || CONFIG="$DEST/config.py"
if ! PYTHONPATH="$DEST" "$PYTHON" -m dlms_protocol victron --config "$CONFIG" --check-config; then
    say "the configuration has errors (see above); the service will not start until they are fixed"
fi

# 3b. an encrypted meter needs AES-GCM: through the OpenSSL Python itself links (stock Venus OS
# has it), else through cryptography (Victron's feed: 2.8 on Venus 3.0x-3.5x, 42.x from 3.60)
HAS_KEY=$(PYTHONPATH="$DEST" "$PYTHON" -c '
import sys
from dlms_protocol.victron.config_file import load_config
cfg = load_config(sys.argv[1])
print("yes" if cfg.listener is not None and cfg.listener.key else "no")' "$CONFIG" 2>/dev/null || echo no)
aes_engine() {  # the engine an encrypted push would use, or nothing when none is usable
    PYTHONPATH="$DEST" "$PYTHON" -c 'from dlms_protocol.dlms import gcm; print(gcm.engine().name)' 2>/dev/null
}
if [ "$HAS_KEY" = yes ]; then
    AES=$(aes_engine || true)
    if [ -z "$AES" ]; then
        say "the configuration has a key, Python's OpenSSL is not usable here and python3-cryptography is missing: installing it with opkg"
        if ! { "$OPKG" update && "$OPKG" install python3-cryptography; }; then
            die "opkg could not install python3-cryptography; install it by hand (opkg update && opkg install python3-cryptography) and run install.sh again - without it every encrypted push is refused"
        fi
        AES=$(aes_engine || true)
        [ -n "$AES" ] || die "python3-cryptography was installed but Python cannot use it; check opkg's output above"
        say "installed python3-cryptography"
    fi
    say "the configuration has a key: encrypted pushes are deciphered with $AES"
else
    say "no key configured: plain meter, no AES-GCM needed"
fi

# 4. udev rule against serial-starter (optional)
if [ "$UDEV" = yes ]; then
    PORT=$(PYTHONPATH="$DEST" "$PYTHON" -c '
import sys
from dlms_protocol.victron.config_file import load_config
print(load_config(sys.argv[1]).port)' "$CONFIG" 2>/dev/null || true)
    case "$PORT" in
        /dev/*) ;;
        *) die "--udev needs a serial port in the configuration (found '$PORT')" ;;
    esac
    [ -e "$PORT" ] || die "$PORT does not exist: plug the adapter in, or fix port in the configuration"
    props=$(udevadm info --query=property --name="$PORT")
    key=ID_SERIAL_SHORT
    value=$(echo "$props" | sed -n "s/^$key=//p")
    if [ -z "$value" ]; then
        key=ID_MODEL
        value=$(echo "$props" | sed -n "s/^$key=//p")
    fi
    [ -n "$value" ] || die "udev knows neither ID_SERIAL_SHORT nor ID_MODEL of $PORT"
    sed -e "s|@MATCH_KEY@|$key|" -e "s|@MATCH_VALUE@|$value|" \
        "$DEST/udev/zz-dbus-dlms-meter.rules.in" > "$DEST/udev/zz-dbus-dlms-meter.rules"
    echo "TTY=\"$(basename "$(readlink -f "$PORT")")\"" >> "$DEST/install.conf"
    say "udev rule: $key == $value -> VE_SERVICE=ignore"
fi

# 5. the service and the boot hook
mkdir -p "$SERVICE_ROOT"
if [ -L "$SERVICE_ROOT/$NAME" ] || [ -e "$SERVICE_ROOT/$NAME" ]; then
    if command -v svc >/dev/null 2>&1; then svc -t "$SERVICE_ROOT/$NAME" 2>/dev/null || true; fi
else
    ln -s "$DEST/service" "$SERVICE_ROOT/$NAME"
fi
LINE="[ -x $DEST/boot.sh ] && $DEST/boot.sh  # $NAME"
if [ ! -f "$RC_LOCAL" ]; then
    printf '#!/bin/sh\n' > "$RC_LOCAL"
fi
if ! grep -qF "$LINE" "$RC_LOCAL"; then
    grep -v "# $NAME\$" "$RC_LOCAL" > "$RC_LOCAL.tmp" || true
    echo "$LINE" >> "$RC_LOCAL.tmp"
    mv "$RC_LOCAL.tmp" "$RC_LOCAL"
fi
chmod 755 "$RC_LOCAL"
"$DEST/boot.sh"

say "installed. Check:  svstat $SERVICE_ROOT/$NAME"
say "log:             tail -F /var/log/$NAME/current | tai64nlocal"
say "settings:        $CONFIG (then: svc -t $SERVICE_ROOT/$NAME)"
