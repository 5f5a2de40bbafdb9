#!/bin/sh
# Interop test: slixmpp (Debian's python3-slixmpp) <-> libstrophe through petreld.
# Debian's python3, not a python3 from another install, has slixmpp.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec timeout 180 "$py" "$(dirname "$0")/slixmpp_echo.py"
