#!/bin/sh
# dev-run.sh — the README's first command: install, build, start petreld in
# the foreground on the development default (host localhost, 127.0.0.1:5222
# STARTTLS and :5223 direct TLS, data in ./var, a self-signed certificate).
set -eu
cd "$(dirname "$0")/.."
contrib/bootstrap.sh
[ -x configure ] || autoreconf -fi
mkdir -p build
(cd build && { [ -f Makefile ] || ../configure -q --prefix=/usr/local --sysconfdir=/etc; } && make -j"$(nproc)" >/dev/null)
echo
echo "Petrel is starting. Create an account from another terminal with:"
echo "  echo 'a-password' | build/src/petrelctl -c contrib/petrel-dev.conf adduser you@localhost"
echo "then log in with any XMPP client as you@localhost on 127.0.0.1:5222 (self-signed certificate)."
echo
exec build/src/petreld -c contrib/petrel-dev.conf
