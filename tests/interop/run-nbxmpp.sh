#!/bin/sh
# Interop test: nbxmpp (Debian's python3-nbxmpp, Gajim's XMPP library) through petreld.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec timeout 120 "$py" "$(dirname "$0")/nbxmpp_login.py"
