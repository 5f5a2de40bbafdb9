#!/usr/bin/python3
"""Interop: everyday IM with python3-slixmpp (Debian) against a spawned petreld:
sign-up (XEP-0077), the subscription handshake with slixmpp's own automatic
answers, presence both ways, chat, a message kept while the contact is
offline and delivered at its login (XEP-0160, with its XEP-0203 delay), and
the roster as slixmpp sees it. Prints "N passed, M failed".

slixmpp 1.8 holds back every stanza sent before the session is bound unless
its `_always_send_everything` flag is set, so an iq of registration (which
must go before authentication) never leaves it; the flag is set for the
sign-up connection only. Everything else is slixmpp's own behaviour."""
import asyncio, os, ssl, sys

try:
    import slixmpp
except ImportError:
    print("slixmpp is not installed (Debian: python3-slixmpp): skipped")
    sys.exit(77)

from petrel_harness import Results, Server, binaries_present

R = Results()
check = R.check

HOST = ('modules = { "disco", "ping", "roster", "vcard", "register", "offline" } '
        'allow_registration = true register { max_per_address = 50 }')


def tls_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE     # the development certificate is self-signed
    return ctx


class Registrar(slixmpp.ClientXMPP):
    """Signs up jid with password through XEP-0077, then disconnects."""

    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context = tls_ctx()
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0066")
        self.register_plugin("xep_0077")
        self["xep_0077"].force_registration = True
        self._always_send_everything = True
        self.result = asyncio.get_event_loop().create_future()
        self.add_event_handler("register", self.on_register)
        self.add_event_handler("session_start", self.on_start)

    async def on_register(self, form):
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = self.boundjid.user
        iq["register"]["password"] = self.password
        try:
            await iq.send(timeout=10)
            if not self.result.done():
                self.result.set_result("registered")
        except slixmpp.exceptions.IqError as e:
            if not self.result.done():
                self.result.set_result("error: " + str(e.iq["error"]["condition"]))
        except slixmpp.exceptions.IqTimeout:
            if not self.result.done():
                self.result.set_result("timeout")

    async def on_start(self, event):
        if not self.result.done():
            self.result.set_result("logged in without registering")


class User(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ssl_context = tls_ctx()
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0203")
        self.started = asyncio.get_event_loop().create_future()
        self.messages = asyncio.Queue()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.auto_authorize = True      # slixmpp's defaults, spelled out: approve requests,
        self.auto_subscribe = True      # and ask back

    async def on_start(self, event):
        self.send_presence()
        await self.get_roster()
        if not self.started.done():
            self.started.set_result(True)


async def until(cond, secs=10):
    for _ in range(int(secs * 20)):
        if cond():
            return True
        await asyncio.sleep(0.05)
    return cond()


async def next_message(user, secs=10):
    try:
        return await asyncio.wait_for(user.messages.get(), secs)
    except asyncio.TimeoutError:
        return None


async def login(jid, pw, port):
    u = User(jid, pw)
    u.connect(("127.0.0.1", port))
    try:
        await asyncio.wait_for(u.started, 15)
        return u
    except asyncio.TimeoutError:
        return None


async def scenario(port):
    reg = Registrar("ann@localhost", "ann-secret-pw")
    reg.connect(("127.0.0.1", port))
    try:
        res = await asyncio.wait_for(reg.result, 15)
    except asyncio.TimeoutError:
        res = "no answer in 15 s"
    check("XEP-0077: slixmpp signs up ann@localhost", res == "registered", res)
    reg.disconnect()
    await asyncio.sleep(0.3)

    ann = await login("ann@localhost/slix", "ann-secret-pw", port)
    if not check("the new account logs in", ann is not None, "no session_start"):
        return
    bob = await login("bob@localhost/slix", "bob-pw", port)
    if not check("bob logs in", bob is not None, "no session_start"):
        return

    # ann asks; bob's slixmpp approves and asks back; ann's approves
    ann.send_presence(pto="bob@localhost", ptype="subscribe")
    both = lambda: (ann.client_roster["bob@localhost"]["subscription"] == "both" and
                    bob.client_roster["ann@localhost"]["subscription"] == "both")
    check("subscription handshake: both rosters say both", await until(both),
          f"ann sees {ann.client_roster['bob@localhost']['subscription']!r}, "
          f"bob sees {bob.client_roster['ann@localhost']['subscription']!r}")
    seen = lambda: ("slix" in ann.client_roster["bob@localhost"].resources and
                    "slix" in bob.client_roster["ann@localhost"].resources)
    check("presence: each sees the other's resource online", await until(seen),
          f"ann sees {list(ann.client_roster['bob@localhost'].resources)}, "
          f"bob sees {list(bob.client_roster['ann@localhost'].resources)}")

    ann.send_message(mto="bob@localhost", mbody="hi bob ✓", mtype="chat")
    m = await next_message(bob)
    check("chat: bob gets ann's message", m is not None and m["body"] == "hi bob ✓" and
          str(m["from"]) == "ann@localhost/slix", repr(m and (str(m["from"]), m["body"])))

    # bob goes; ann sees it; a message waits for him
    bob.disconnect()
    gone = lambda: "slix" not in ann.client_roster["bob@localhost"].resources
    check("presence: ann sees bob go offline", await until(gone), "bob's resource still listed")
    ann.send_message(mto="bob@localhost", mbody="while you were away", mtype="chat")
    await asyncio.sleep(0.5)
    bob2 = await login("bob@localhost/again", "bob-pw", port)
    if not check("bob logs in again", bob2 is not None, "no session_start"):
        return
    m = await next_message(bob2)
    check("offline: the message kept for bob arrives at his login",
          m is not None and m["body"] == "while you were away", repr(m and m["body"]))
    stamp = m["delay"]["stamp"] if m is not None else None
    check("offline: it carries its XEP-0203 delay", stamp is not None, repr(m))
    check("roster: bob's slixmpp has ann with subscription both after login",
          bob2.client_roster["ann@localhost"]["subscription"] == "both",
          repr(bob2.client_roster["ann@localhost"]["subscription"]))
    for u in (ann, bob2):
        u.disconnect()
    await asyncio.sleep(0.3)


def main():
    if not binaries_present():
        check("binaries built", False)
        return R.summary()
    srv = Server("bob@localhost bob-pw\n", HOST)
    check("petrelctl adduser --batch", srv.users_out.returncode == 0, srv.users_out.stderr)
    try:
        try:
            asyncio.run(scenario(srv.port))
        except Exception as e:          # counted, so that the summary line still says it failed
            check("the slixmpp IM scenario ran to its end", False, repr(e))
    finally:
        rc = srv.stop()
        check("petreld exits cleanly", rc == 0, f"exit status {rc}")
        srv.cleanup(keep=R.failed > 0)
    return R.summary()


if __name__ == "__main__":
    sys.exit(main())
