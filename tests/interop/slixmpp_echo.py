#!/usr/bin/python3
"""Interop: python3-slixmpp (Debian) logs in to a spawned petreld and exchanges
a message with a libstrophe client (strophe-echo). Prints "N passed, M failed"."""
import asyncio, os, ssl, subprocess, sys

try:
    import slixmpp
except ImportError:
    print("slixmpp is not installed (Debian: python3-slixmpp): skipped")
    sys.exit(77)

from petrel_harness import TOP_BUILD, Results, Server, binaries_present

echo = os.path.join(TOP_BUILD, "tests", "interop", "strophe-echo")
R = Results()
check = R.check


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, peer):
        super().__init__(jid, password)
        self.peer = peer
        self.reply = asyncio.get_event_loop().create_future()
        self.started = asyncio.get_event_loop().create_future()
        self.mechanism = None
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("auth_success", lambda e: None)
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0092")
        self.register_plugin("xep_0199")

    async def on_start(self, event):
        self.send_presence()
        self.started.set_result(True)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and not self.reply.done():
            self.reply.set_result((str(msg["from"]), msg["body"]))


async def scenario(port):
    c = Client("alice@localhost/slix", "alice-pw", "bob@localhost")
    c.connect(("127.0.0.1", port))
    try:
        await asyncio.wait_for(c.started, 15)
        check("slixmpp logs in and binds", True)
    except asyncio.TimeoutError:
        check("slixmpp logs in and binds", False, "no session_start within 15 s")
        return
    check("slixmpp bound the requested resource", str(c.boundjid) == "alice@localhost/slix", str(c.boundjid))
    version = await c["xep_0092"].get_version("localhost", timeout=10)
    check("XEP-0092 version of the server", version["software_version"]["name"] == "Petrel",
          str(version))
    info = await c["xep_0030"].get_info(jid="localhost", timeout=10)
    feats = info["disco_info"]["features"]
    check("XEP-0030 lists urn:xmpp:ping", "urn:xmpp:ping" in feats, str(feats))
    await c["xep_0199"].ping("localhost", timeout=10)
    check("XEP-0199 ping answered", True)
    text = "héllo from slixmpp ✓ " + "x" * 2000
    c.send_message(mto="bob@localhost", mbody=text, mtype="chat")
    try:
        frm, body = await asyncio.wait_for(c.reply, 15)
        check("libstrophe peer echoed the message", body == "echo: " + text, repr(body[:80]))
        check("reply comes from the peer's full JID", frm.startswith("bob@localhost/"), frm)
    except asyncio.TimeoutError:
        check("libstrophe peer echoed the message", False, "no reply within 15 s")
    c.send_message(mto="bob@localhost", mbody="bye", mtype="chat")
    await asyncio.sleep(0.5)
    c.disconnect()
    await asyncio.sleep(0.3)


def main():
    if not binaries_present(echo):
        check("binaries built", False)
        return R.summary()
    srv = Server("alice@localhost alice-pw\nbob@localhost bob-pw\n")
    check("petrelctl adduser --batch", srv.users_out.returncode == 0, srv.users_out.stderr)
    peer = None
    try:
        peer = subprocess.Popen([echo, "bob@localhost/strophe", "bob-pw", "127.0.0.1", str(srv.port), "40"],
                                stdout=subprocess.PIPE, text=True)
        line = peer.stdout.readline()
        check("libstrophe peer online", "online as bob@localhost/strophe" in line, line)
        asyncio.run(scenario(srv.port))
        try:
            peer_rc = peer.wait(timeout=20)
        except subprocess.TimeoutExpired:
            peer_rc = -1
        check("libstrophe peer got the goodbye and exited cleanly", peer_rc == 0, f"exit {peer_rc}")
    finally:
        if peer and peer.poll() is None:
            peer.kill()
        rc = srv.stop()
        check("petreld exits cleanly", rc == 0, f"exit {rc}")
        text = srv.log_text()
        # slixmpp tries SCRAM-*-PLUS with tls-unique, which TLS 1.3 does not define
        # (RFC 9266), then SCRAM with the "y" flag, which a server offering -PLUS must
        # refuse (RFC 5802), then PLAIN, offered only inside TLS. Those refusals are
        # negotiation, not password guesses: the address must not be throttled.
        check("slixmpp authenticated inside TLS after its channel-binding attempts",
              "authenticated as alice@localhost (PLAIN)" in text or
              "authenticated as alice@localhost (SCRAM-" in text, "see petreld.log")
        check("mechanism negotiation is not counted as failed logins",
              "slowing it down" not in text and "throttled" not in text, "address was throttled")
        srv.cleanup(keep=R.failed > 0)
    return R.summary()


if __name__ == "__main__":
    sys.exit(main())
