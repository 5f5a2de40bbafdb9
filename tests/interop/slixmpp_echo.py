#!/usr/bin/python3
"""Interop: python3-slixmpp (Debian) logs in to a spawned petreld, asks the
server for its version, features, a ping and its entity time, and exchanges a
message with a libstrophe client (strophe-echo). Prints "N passed, M failed".

Every check can fail. slixmpp's conveniences are not trusted where they hide
an error: xep_0199 ping() returns a round-trip time even for an error reply
from the user's own server, and 1.8.3's EntityTime accessors cannot parse a
conformant <utc/> (they append a second "Z") or <tzo/>, and make up the
current time for an empty <utc/>. So iqs are sent with Iq.send() and the
reply's type and payload are read here."""
import asyncio, calendar, os, re, ssl, subprocess, sys, time

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
        self.register_plugin("xep_0202")

    async def on_start(self, event):
        self.send_presence()
        self.started.set_result(True)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and not self.reply.done():
            self.reply.set_result((str(msg["from"]), msg["body"]))


async def reply_of(sent):
    """Await a sent iq (Iq.send's future); the reply (result or error), or None on timeout."""
    try:
        return await sent
    except slixmpp.exceptions.IqError as e:
        return e.iq
    except slixmpp.exceptions.IqTimeout:
        return None


def is_result(reply, frm):
    """(ok, why): reply is an iq result from frm."""
    if reply is None:
        return False, "no reply within 10 s"
    if reply["type"] != "result" or str(reply["from"]) != frm:
        return False, f"want a result from {frm}, got {reply}"
    return True, ""


UTC_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$")
TZO_RE = re.compile(r"^([+-])(\d\d):(\d\d)$")


def check_entity_time(reply, frm):
    """XEP-0202: <utc/> within 5 s of this clock, <tzo/> this zone's offset now."""
    ok, why = is_result(reply, frm)
    if not check("XEP-0202 entity time answered with a result", ok, why):
        return
    t = reply.xml.find("{urn:xmpp:time}time")
    utc = t.findtext("{urn:xmpp:time}utc", "") if t is not None else ""
    tzo = t.findtext("{urn:xmpp:time}tzo", "") if t is not None else ""
    m = UTC_RE.match(utc)
    when = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) if m else None
    check("XEP-0202 <utc/> is a UTC dateTime within 5 s of this clock",
          when is not None and abs(when - time.time()) <= 5, f"utc={utc!r}, now={time.time():.0f}: {reply}")
    m = TZO_RE.match(tzo)
    off = (1 if m.group(1) == "+" else -1) * (int(m.group(2)) * 3600 + int(m.group(3)) * 60) if m else None
    # the server runs in this process's environment, so in its zone
    want = time.localtime().tm_gmtoff
    check("XEP-0202 <tzo/> is the server's zone offset", off == want, f"tzo={tzo!r}, want {want:+d} s: {reply}")


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
    iq = c.Iq(stype="get", sto="localhost")
    iq.enable("software_version")
    reply = await reply_of(iq.send(timeout=10))
    ok, why = is_result(reply, "localhost")
    check("XEP-0092 version of the server",
          ok and reply["software_version"]["name"] == "Petrel" and reply["software_version"]["version"] != "",
          why or str(reply))
    iq = c.Iq(stype="get", sto="localhost")
    iq.enable("disco_info")
    reply = await reply_of(iq.send(timeout=10))
    ok, why = is_result(reply, "localhost")
    feats = reply["disco_info"]["features"] if ok else []
    for var in ("urn:xmpp:ping", "urn:xmpp:time"):
        check(f"XEP-0030 lists {var}", var in feats, why or str(feats))
    iq = c.Iq(stype="get", sto="localhost")
    iq.enable("ping")
    reply = await reply_of(iq.send(timeout=10))
    ok, why = is_result(reply, "localhost")
    check("XEP-0199 ping answered with a result", ok, why)
    # the request as slixmpp's own plugin builds and sends it
    check_entity_time(await reply_of(c["xep_0202"].get_entity_time("localhost", timeout=10)), "localhost")
    text = "héllo from slixmpp ✓ " + "x" * 2000
    c.send_message(mto="bob@localhost", mbody=text, mtype="chat")
    try:
        frm, body = await asyncio.wait_for(c.reply, 15)
        check("libstrophe peer echoed the message", body == "echo: " + text, repr(body[:80]))
        check("reply comes from the peer's full JID", frm == "bob@localhost/strophe", frm)
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
        try:
            asyncio.run(scenario(srv.port))
        except Exception as e:          # counted, so that the summary line still says it failed
            check("the slixmpp scenario ran to its end", False, repr(e))
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
