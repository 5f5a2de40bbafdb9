#!/bin/sh
# bootstrap.sh — install what Petrel needs on Debian 12, from Debian's packages.
#   contrib/bootstrap.sh          build dependencies
#   contrib/bootstrap.sh --test   plus what the test suite uses (libstrophe, cmocka, slixmpp)
# Run as root (or with sudo available). Safe to run again.
set -eu

BUILD_PKGS="build-essential autoconf automake libtool pkg-config
 libevent-dev libexpat1-dev libssl-dev liblmdb-dev libc-ares-dev libidn-dev libconfuse-dev openssl"
TEST_PKGS="libstrophe-dev libcmocka-dev python3 python3-slixmpp python3-nbxmpp lmdb-utils procps"

pkgs="$BUILD_PKGS"
[ "${1:-}" = "--test" ] && pkgs="$pkgs $TEST_PKGS"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "bootstrap: run as root (apt-get needs it)" >&2; exit 1; fi
fi

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "bootstrap: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
echo "bootstrap: all dependencies present"
