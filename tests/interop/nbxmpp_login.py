#!/usr/bin/python3
"""Interop: python3-nbxmpp (Debian; the XMPP library of Gajim) logs in to a
spawned petreld over STARTTLS, binds, sends a message to its own full JID and
receives it. Prints "N passed, M failed"."""
import sys

try:
    import gi
    gi.require_version("GLib", "2.0")
    from gi.repository import GLib
    from nbxmpp.client import Client
    from nbxmpp.const import ConnectionProtocol, ConnectionType
    from nbxmpp.protocol import JID, Message
except (ImportError, ValueError) as e:
    print(f"nbxmpp is not installed (Debian: python3-nbxmpp): skipped ({e})")
    sys.exit(77)

from petrel_harness import Results, Server, binaries_present


def main():
    r = Results()
    if not binaries_present():
        r.check("binaries built", False)
        return r.summary()
    srv = Server("gajim@localhost gajim-pw\n")
    r.check("petrelctl adduser --batch", srv.users_out.returncode == 0, srv.users_out.stderr)
    loop = GLib.MainLoop()
    got = {}
    body = "hello from nbxmpp ✓"
    c = Client()
    c.set_domain("localhost")
    c.set_username("gajim")
    c.set_password("gajim-pw")
    c.set_resource("desktop")
    c.set_custom_host(f"127.0.0.1:{srv.port}", ConnectionProtocol.TCP, ConnectionType.START_TLS)
    c.set_connection_types([ConnectionType.START_TLS])
    c.set_ignore_tls_errors(True)            # the development certificate is self-signed

    def on_connected(client, _signal):
        got["jid"] = str(client.get_bound_jid())
        client.send_stanza(Message(to=JID.from_string("gajim@localhost/desktop"), body=body, typ="chat"))

    def on_stanza(client, _signal, data):
        if body in str(data):
            got["msg"] = str(data)
            loop.quit()

    def on_fail(client, signal_name, *args):
        got.setdefault("failure", signal_name)
        loop.quit()

    c.subscribe("connected", on_connected)
    c.subscribe("stanza-received", on_stanza)
    c.subscribe("connection-failed", on_fail)
    c.subscribe("disconnected", on_fail)
    c.connect()
    GLib.timeout_add_seconds(20, loop.quit)
    loop.run()
    r.check("nbxmpp connected and bound the requested resource",
            got.get("jid") == "gajim@localhost/desktop", got.get("failure") or got.get("jid"))
    r.check("its own message came back through the server", "msg" in got, "nothing within 20 s")
    r.check("the server stamped from with the full JID",
            "from=\"gajim@localhost/desktop\"" in got.get("msg", "") or
            "from='gajim@localhost/desktop'" in got.get("msg", ""), got.get("msg", "")[:200])
    c.disconnect()
    ctx = GLib.MainContext.default()
    for _ in range(20):
        ctx.iteration(False)
    rc = srv.stop()
    r.check("petreld exits cleanly", rc == 0, f"exit {rc}")
    r.check("nbxmpp authenticated with SCRAM inside TLS",
            "authenticated as gajim@localhost (SCRAM-" in srv.log_text(), "see petreld.log")
    srv.cleanup(keep=r.failed > 0)
    return r.summary()


if __name__ == "__main__":
    sys.exit(main())
