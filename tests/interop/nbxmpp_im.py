#!/usr/bin/python3
"""Interop: everyday IM with python3-nbxmpp (Debian; the XMPP library of
Gajim) against a spawned petreld: nbxmpp's own Roster module fetches the
roster (it detects roster versioning from the stream feature), its presence
module asks for a subscription, the contact approves, both see each other
online, chat, and the roster push arrives. Prints "N passed, M failed"."""
import sys

try:
    import gi
    gi.require_version("GLib", "2.0")
    from gi.repository import GLib
    from nbxmpp.client import Client
    from nbxmpp.const import ConnectionProtocol, ConnectionType
    from nbxmpp.protocol import JID, Message
    from nbxmpp.structs import StanzaHandler
except (ImportError, ValueError) as e:
    print(f"nbxmpp is not installed (Debian: python3-nbxmpp): skipped ({e})")
    sys.exit(77)

from petrel_harness import Results, Server, binaries_present

HOST = 'modules = { "disco", "ping", "roster" }'


def client(user, pw, port):
    c = Client()
    c.set_domain("localhost")
    c.set_username(user)
    c.set_password(pw)
    c.set_resource("gajim")
    c.set_custom_host(f"127.0.0.1:{port}", ConnectionProtocol.TCP, ConnectionType.START_TLS)
    c.set_connection_types([ConnectionType.START_TLS])
    c.set_ignore_tls_errors(True)            # the development certificate is self-signed
    return c


def main():
    r = Results()
    if not binaries_present():
        r.check("binaries built", False)
        return r.summary()
    srv = Server("g1@localhost g1-pw\ng2@localhost g2-pw\n", HOST)
    r.check("petrelctl adduser --batch", srv.users_out.returncode == 0, srv.users_out.stderr)
    loop = GLib.MainLoop()
    st = {"connected": set(), "roster": None, "events": []}
    g1, g2 = client("g1", "g1-pw", srv.port), client("g2", "g2-pw", srv.port)

    def step():
        ev = st["events"]
        if "g2-subscribe" in ev and "approved" not in ev:
            ev.append("approved")
            g2.get_module("BasePresence").subscribed(JID.from_string("g1@localhost"))
        if "g1-g2-online" in ev and "chat" not in ev:
            ev.append("chat")
            g1.send_stanza(Message(to=JID.from_string("g2@localhost"), body="hello from Gajim's library", typ="chat"))
        if "g2-chat" in ev and "g1-push-to" in ev:
            loop.quit()

    def on_roster(task):
        try:
            st["roster"] = task.finish()
        except Exception as e:               # an error reply
            st["roster"] = e
        # then ask g2 for its presence
        g1.get_module("BasePresence").subscribe(JID.from_string("g2@localhost"))

    def on_connected(c, _signal):
        st["connected"].add(str(c.get_bound_jid()))
        c.get_module("BasePresence").send()
        if len(st["connected"]) == 2:
            g1.get_module("Roster").request_roster(callback=on_roster)

    def g2_presence(c, stanza, properties):
        if stanza.getType() == "subscribe" and str(stanza.getFrom()) == "g1@localhost":
            st["events"].append("g2-subscribe")
            step()

    def g1_presence(c, stanza, properties):
        if stanza.getType() in (None, "available") and str(stanza.getFrom()) == "g2@localhost/gajim":
            st["events"].append("g1-g2-online")
            step()

    def g1_push(c, stanza, properties):
        if stanza.getType() == "set":
            for item in stanza.getTag("query").getTags("item"):
                if item.getAttr("jid") == "g2@localhost" and item.getAttr("subscription") == "to":
                    st["events"].append("g1-push-to")
                    step()

    def g2_message(c, stanza, properties):
        if stanza.getBody() == "hello from Gajim's library" and str(stanza.getFrom()) == "g1@localhost/gajim":
            st["events"].append("g2-chat")
            step()

    def on_fail(c, signal_name, *args):
        st.setdefault("failure", signal_name)
        loop.quit()

    for c in (g1, g2):
        c.subscribe("connected", on_connected)
        c.subscribe("connection-failed", on_fail)
    g2.register_handler(StanzaHandler(name="presence", callback=g2_presence, priority=40))
    g1.register_handler(StanzaHandler(name="presence", callback=g1_presence, priority=40))
    g1.register_handler(StanzaHandler(name="iq", callback=g1_push, ns="jabber:iq:roster", priority=40))
    g2.register_handler(StanzaHandler(name="message", callback=g2_message, priority=40))
    g1.connect()
    g2.connect()
    GLib.timeout_add_seconds(25, loop.quit)
    loop.run()
    ev = st["events"]
    r.check("both nbxmpp clients connected and bound", st["connected"] == {"g1@localhost/gajim", "g2@localhost/gajim"},
            st.get("failure") or repr(st["connected"]))
    ro = st["roster"]
    r.check("nbxmpp's Roster module got the roster, versioned (the rosterver feature)",
            ro is not None and not isinstance(ro, Exception) and ro.version is not None, repr(ro))
    r.check("the contact got the subscription request from g1's bare JID", "g2-subscribe" in ev, repr(ev))
    r.check("after approval g1 sees g2 online", "g1-g2-online" in ev, repr(ev))
    r.check("g1 got the roster push with subscription 'to'", "g1-push-to" in ev, repr(ev))
    r.check("g2 got g1's chat message", "g2-chat" in ev, repr(ev))
    for c in (g1, g2):
        c.disconnect()
    ctx = GLib.MainContext.default()
    for _ in range(30):
        ctx.iteration(False)
    rc = srv.stop()
    r.check("petreld exits cleanly", rc == 0, f"exit {rc}")
    srv.cleanup(keep=r.failed > 0)
    return r.summary()


if __name__ == "__main__":
    sys.exit(main())
