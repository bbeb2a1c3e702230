#!/usr/bin/env bash
# Library-version matrix of the Venus OS service (issue 9): the code must run on what Victron ships.
#
#   py38-venus35   CPython 3.8  + pyserial 3.4 + dbus-fast 2.22.1 (pure Python) + cryptography 2.8
#                  + gurux-dlms at the floor requirements.txt allows on 3.8  (Venus OS 3.0x-3.5x)
#   py312-venus36  CPython 3.12 + newest pyserial/dbus-fast + cryptography 42.x          (Venus OS 3.60+)
#   py38-plain     CPython 3.8  + pyserial 3.4 + dbus-fast 2.22.1, NO cryptography at all (plain meters)
#   py313-debian13 CPython 3.13 + the newest of requirements.txt: the Python of Debian 13 and Raspberry
#                  Pi OS "trixie", where SmartHomeNG users install the plugin (the development venv
#                  is the machine's python3); it runs the plugin's, D0's and SML's test files
#
# The first two run the Victron, push and AES-engine test files with deciphering forced onto
# cryptography (DLMS_AES_ENGINE=cryptography: 2.8 and 42.x proven end to end; the engine tests and
# the no-cryptography service tests still use Python's OpenSSL), the third the tests of a plain
# meter and of an encrypted one deciphered through Python's OpenSSL. Interpreters come from pyenv (`pyenv prefix 3.8`), never from a
# hard-coded path; a missing one fails the run with the command that installs it.
# Environments are cached in .venv-matrix/ (delete it to rebuild).
#
#   .ci/matrix.sh            all three
#   .ci/matrix.sh py38-plain one of them
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE="$ROOT/.venv-matrix"
# the lowest gurux-dlms requirements.txt allows, per Python (its oracle tests must pass with it)
GURUX_FLOOR_NEW=$(sed -n 's/^gurux-dlms>=\([0-9.]*\).*python_version >= "3.10".*/\1/p' requirements.txt)
GURUX_FLOOR_OLD=$(sed -n 's/^gurux-dlms>=\([0-9.]*\).*python_version < "3.10".*/\1/p' requirements.txt)
[ -n "$GURUX_FLOOR_NEW" ] && [ -n "$GURUX_FLOOR_OLD" ] \
    || { echo "matrix: no gurux-dlms>= floors (Python < / >= 3.10) in requirements.txt" >&2; exit 1; }
TEST_TOOLS=(pytest pytest-timeout pytest-xdist hypothesis)
# parallel workers, as tools/dev.py test runs the suite: the tests mostly wait on real lines and buses
WORKERS=${DLMS_TEST_WORKERS:-$(( $(nproc) + 1 > 4 ? 4 : $(nproc) + 1 ))}
PLAIN_TESTS=(tests/test_victron_nocrypto.py tests/test_victron_mapping.py tests/test_victron_bridge.py tests/test_gcm.py)

fail() { echo "matrix: error: $*" >&2; exit 1; }

interpreter() {  # interpreter <major.minor> -> path of its python, found through pyenv
    command -v pyenv >/dev/null 2>&1 || fail "pyenv is not installed; the matrix needs CPython $1 from pyenv \
(https://github.com/pyenv/pyenv, then: pyenv install $1)"
    local prefix
    prefix=$(pyenv prefix "$1" 2>/dev/null) || fail "CPython $1 is not installed under pyenv ($(pyenv root)); \
install it: pyenv install $1"
    [ -x "$prefix/bin/python$1" ] || fail "pyenv prefix $1 gives $prefix, which has no bin/python$1"
    echo "$prefix/bin/python$1"
}

make_env() {  # make_env <name> <python version> <pip requirement...>
    local name=$1 version=$2
    shift 2
    local env="$CACHE/$name" stamp
    # (requirements.txt's text too: an entry installs from it, and the floors come from it)
    stamp=$(printf '%s\n' "$version" "$@" "${TEST_TOOLS[@]}" "$(cat "$ROOT/requirements.txt")" | sha1sum | cut -c1-12)
    if [ ! -f "$env/.stamp-$stamp" ]; then
        rm -rf "$env"
        local python
        python=$(interpreter "$version")
        "$python" -m venv "$env"
        mkdir -p "$CACHE"
        # dbus-fast from source without its Cython extension: the pure-Python build Venus OS ships
        if ! SKIP_CYTHON=1 "$env/bin/python" -m pip install -q --no-binary dbus-fast "$@" "${TEST_TOOLS[@]}" \
                >"$CACHE/$name.pip.log" 2>&1; then
            tail -20 "$CACHE/$name.pip.log" >&2
            fail "$name: pip could not install $* (log: $CACHE/$name.pip.log)"
        fi
        touch "$env/.stamp-$stamp"
    fi
    echo "$env"
}

run() {  # run <name> <env> <tests...>
    local name=$1 env=$2
    shift 2
    echo "=== matrix $name: $("$env/bin/python" -c 'import sys, importlib
out = ["Python " + sys.version.split()[0], "DLMS_AES_ENGINE=" + (__import__("os").environ.get("DLMS_AES_ENGINE") or "auto")]
for m, d in (("serial", "pyserial"), ("dbus_fast", "dbus-fast"), ("cryptography", "cryptography"),
             ("gurux_dlms", "gurux-dlms")):
    try:
        from importlib import metadata
        v = metadata.version(d)
    except Exception:
        v = "absent"
    if m == "dbus_fast" and v != "absent":
        import dbus_fast.message as mm
        v += " (compiled)" if mm.__file__.endswith(".so") else " (pure Python)"
    out.append(d + " " + v)
print(", ".join(out))')"
    (cd "$ROOT" && "$env/bin/python" -m pytest -q -p no:cacheprovider -n "$WORKERS" "$@")
}

want=${1:-all}
case "$want" in all|py38-venus35|py312-venus36|py38-plain|py313-debian13) ;; *) fail "unknown matrix entry $want" ;; esac

if [ "$want" = all ] || [ "$want" = py38-venus35 ]; then
    env=$(make_env py38-venus35 3.8 "pyserial==3.4" "dbus-fast==2.22.1" "cryptography==2.8" "gurux-dlms==$GURUX_FLOOR_OLD")
    DLMS_AES_ENGINE=cryptography run py38-venus35 "$env" tests/test_victron_*.py tests/test_push_*.py tests/test_scale_check.py tests/test_cadence.py tests/test_gcm.py
fi
if [ "$want" = all ] || [ "$want" = py312-venus36 ]; then
    env=$(make_env py312-venus36 3.12 pyserial dbus-fast "cryptography>=42,<43" "gurux-dlms==$GURUX_FLOOR_NEW")
    DLMS_AES_ENGINE=cryptography run py312-venus36 "$env" tests/test_victron_*.py tests/test_push_*.py tests/test_scale_check.py tests/test_cadence.py tests/test_gcm.py
fi
if [ "$want" = all ] || [ "$want" = py38-plain ]; then
    env=$(make_env py38-plain 3.8 "pyserial==3.4" "dbus-fast==2.22.1" "gurux-dlms==$GURUX_FLOOR_OLD")
    "$env/bin/python" -c 'import cryptography' 2>/dev/null && fail "py38-plain: cryptography is installed in $env"
    run py38-plain "$env" "${PLAIN_TESTS[@]}"
fi
if [ "$want" = all ] || [ "$want" = py313-debian13 ]; then
    env=$(make_env py313-debian13 3.13 -r "$ROOT/requirements.txt" dbus-fast jinja2 pyyaml)
    run py313-debian13 "$env" tests/test_shng_*.py tests/test_d0_*.py tests/test_sml_*.py
fi
echo "matrix: all green"
