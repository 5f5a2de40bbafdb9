#!/bin/sh
# Interop test: everyday IM with nbxmpp (Debian's python3-nbxmpp, Gajim's library)
# through petreld: roster, subscription, presence, chat.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
exec timeout 120 "$py" "$(dirname "$0")/nbxmpp_im.py"
