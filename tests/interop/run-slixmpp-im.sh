#!/bin/sh
# Interop test: everyday IM with slixmpp (Debian's python3-slixmpp) through petreld:
# sign-up, subscriptions, presence, chat, offline delivery.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec timeout 180 "$py" "$(dirname "$0")/slixmpp_im.py"
