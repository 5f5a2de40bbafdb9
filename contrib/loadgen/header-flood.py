#!/usr/bin/env python3
"""header-flood.py — what a flood of huge stream headers costs petreld.

The scenario of hardening item 2: CONNS connections each send a stream header
of DECLS xmlns:pN declarations (200 x 500 KB by default), before any
authentication; ROUNDS times, one flood after the other (a server that
refuses such a header at once is done with one round in a few tens of ms). Measured on the server (by /proc/PID/status): resident size
before, at its peak (sampled every 20 ms, and VmHWM), right after every flood
connection has closed and SETTLE seconds later; on the loop: the longest
round trip of an XEP-0199 ping from a session logged in before the flood
(every 20 ms: that is the longest stall of the event loop, to 20 ms), and the
time of full logins (STARTTLS, SASL PLAIN, bind) made one after another
before, during and after. For each flood connection: did it get
<policy-violation/>, was it closed, did the server accept the header (sent
<stream:features/>) instead.

It starts the server itself from a build (--server-bin DIR with petreld and
petrelctl), on free loopback ports, with a temporary data folder and one
account, and stops it at the end; or measures one already running
(--port P --pid PID --user JID --password PW).

    contrib/loadgen/header-flood.py --server-bin build/src
    contrib/loadgen/header-flood.py --server-bin /tmp/base/build/src --conns 200 --decls 5200
    contrib/loadgen/header-flood.py --server-bin build/src --rounds 20   # a longer window

Python 3 standard library only. Loopback only; counts and times are bounded;
everything started here is stopped on exit.
"""

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

STREAM_NS = "http://etherx.jabber.org/streams"
HEADER_OPEN = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
               "xmlns:stream='" + STREAM_NS + "' to='localhost' version='1.0'")
POLICY = "<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"


def flood_header(decls):
    """HEADER_OPEN + decls declarations of 96 bytes each (5 200: 500 KB) + '>'."""
    parts = [HEADER_OPEN]
    for i in range(decls):
        parts.append(" xmlns:p%d='urn:example:padding:%06d:%s'" % (i, i, "x" * (57 - len(str(i)))))
    parts.append(">")
    return "".join(parts).encode()


def proc_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def proc_cpu_s(pid):
    """utime + stime of a process, in seconds."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


# ---- a small XMPP client: STARTTLS, SASL PLAIN, bind, ping ----------------------------------

class Client:
    def __init__(self, port, timeout):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def wait(self, pattern):
        """Read until the regex matches after what was consumed; returns the match."""
        deadline = time.monotonic() + self.timeout
        rx = re.compile(pattern.encode(), re.S)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("waiting for %s, have %r" % (pattern, self.buf[-200:]))
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed while waiting for %s" % pattern)
            self.buf += chunk

    def header(self):
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='%s' "
                  "to='localhost' version='1.0' xml:lang='en'>" % STREAM_NS)
        return self.wait(r"</stream:features>")

    def login(self, user, password, resource_name):
        import base64
        self.header()
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        self.wait(r"<proceed[^>]*/>")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.header()
        local = user.split("@")[0]
        token = base64.b64encode(b"\0" + local.encode() + b"\0" + password.encode()).decode()
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>" % token)
        m = self.wait(r"<(success|failure)[ >/]")
        if m.group(1) != b"success":
            raise RuntimeError("SASL failed: %r" % self.buf[:200])
        self.buf = b""
        self.header()
        self.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>%s</resource></bind></iq>" % resource_name)
        self.wait(r"<iq[^>]*id=['\"]b1['\"][^>]*type=['\"]result|<iq[^>]*type=['\"]result['\"][^>]*id=['\"]b1")

    def ping(self, n):
        self.send("<iq type='get' id='p%d' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>" % n)
        self.wait(r"id=['\"]p%d['\"]" % n)

    def close(self):
        try:
            self.send("</stream:stream>")
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


def timed_login(port, user, password, res, timeout):
    t0 = time.monotonic()
    c = Client(port, timeout)
    try:
        c.login(user, password, res)
    finally:
        c.close()
    return time.monotonic() - t0


class Pinger(threading.Thread):
    """A session logged in before the flood pings the server every 20 ms and
    keeps the round trips, stamped with the phase they fell in."""

    def __init__(self, port, user, password, timeout):
        super().__init__(daemon=True)
        self.c = Client(port, timeout)
        self.c.login(user, password, "pinger")
        self.phase = "before"
        self.rtts = {}
        self.stop = threading.Event()
        self.error = None

    def run(self):
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                t0 = time.monotonic()
                self.c.ping(n)
                self.rtts.setdefault(self.phase, []).append(time.monotonic() - t0)
                self.stop.wait(0.02)
        except Exception as e:      # reported, not raised in the thread
            self.error = repr(e)


class LoginLoop(threading.Thread):
    """Full logins one after another, each stamped with the phase it began in."""

    def __init__(self, port, user, password, timeout):
        super().__init__(daemon=True)
        self.args = (port, user, password)
        self.timeout = timeout
        self.phase = "before"
        self.times = {}
        self.failures = {}
        self.stop = threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            phase = self.phase
            try:
                t = timed_login(self.args[0], self.args[1], self.args[2], "login%d" % n, self.timeout)
                self.times.setdefault(phase, []).append(t)
            except Exception:
                self.failures[phase] = self.failures.get(phase, 0) + 1
            self.stop.wait(0.05)


# ---- the flood --------------------------------------------------------------------------------

class Flooder:
    def __init__(self, port, src, data):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((src, 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.data = memoryview(data)
        self.sent = 0
        self.got = b""
        self.closed = False
        self.write_done = False

    def on_write(self):
        while not self.write_done:
            try:
                n = self.sock.send(self.data[self.sent:self.sent + 262144])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.write_done = True
                return
            self.sent += n
            if self.sent == len(self.data):
                self.write_done = True

    def on_read(self):
        while True:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.closed = True
                return
            if not chunk:
                self.closed = True
                return
            if len(self.got) < 65536:
                self.got += chunk


def run_flood(port, conns, data, deadline_s, pid, samples):
    sel = selectors.DefaultSelector()
    fl = []
    for i in range(conns):
        f = Flooder(port, "127.0.40.%d" % (1 + i % 100), data)
        fl.append(f)
        sel.register(f.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, f)
    deadline = time.monotonic() + deadline_s
    next_sample = 0.0
    while time.monotonic() < deadline:
        if all(f.closed for f in fl):
            break
        for key, ev in sel.select(0.02):
            f = key.data
            if ev & selectors.EVENT_WRITE:
                f.on_write()
            if ev & selectors.EVENT_READ:
                f.on_read()
            if f.closed:
                sel.unregister(f.sock)
                f.sock.close()
            elif f.write_done and key.events & selectors.EVENT_WRITE:
                sel.modify(f.sock, selectors.EVENT_READ, f)
        now = time.monotonic()
        if pid and now >= next_sample:
            samples.append(proc_kb(pid, "VmRSS"))
            next_sample = now + 0.02
    for f in fl:
        if not f.closed:
            sel.unregister(f.sock)
            f.sock.close()
    return fl


# ---- the server, when started here ---------------------------------------------------------------

def free_port_pair():
    for base in range(18222, 19222, 10):
        ok = True
        for p in (base, base + 1):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return base
    raise RuntimeError("no free port pair")


class Server:
    def __init__(self, bindir, work, user, password):
        self.work = work
        port = free_port_pair()
        self.port = port
        conf = os.path.join(work, "petrel.conf")
        with open(conf, "w") as f:
            f.write('data_dir = "%s/var"\nlog_level = "warning"\n'
                    'listen "127.0.0.1:%d" { type = "c2s" tls = "starttls" }\n'
                    'listen "127.0.0.1:%d" { type = "c2s" tls = "direct" }\n'
                    'host "localhost" { modules = { "disco", "ping", "version" } }\n'
                    % (work, port, port + 1))
        ctl = os.path.join(bindir, "petrelctl")
        line = ("%s %s\n" % (user, password)).encode()
        ok = False
        for extra in ([], ["--create-store"]):
            r = subprocess.run([ctl, "-c", conf] + extra + ["adduser", "--batch"], input=line,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if r.returncode == 0:
                ok = True
                break
        if not ok:
            raise RuntimeError("petrelctl adduser failed: %s" % r.stdout.decode(errors="replace")[-500:])
        self.log = open(os.path.join(work, "petreld.log"), "wb")
        self.proc = subprocess.Popen([os.path.join(bindir, "petreld"), "-c", conf],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("petreld exited (%d); see %s" % (self.proc.returncode, self.log.name))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("petreld does not listen on %d" % port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---- main ----------------------------------------------------------------------------------------

def stats(xs):
    if not xs:
        return {"n": 0}
    xs = sorted(xs)
    return {"n": len(xs), "median_ms": round(1000 * xs[len(xs) // 2], 1), "max_ms": round(1000 * xs[-1], 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server-bin", help="folder with petreld and petrelctl: start a server from it")
    ap.add_argument("--port", type=int, help="STARTTLS port of a running server (with --pid)")
    ap.add_argument("--pid", type=int, help="pid of that server, for its memory")
    ap.add_argument("--user", default="probe@localhost")
    ap.add_argument("--password", default="probe-secret")
    ap.add_argument("--conns", type=int, default=200, help="flood connections (1..2000)")
    ap.add_argument("--decls", type=int, default=5200, help="declarations per header (1..20000)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="floods one after another, new connections each (1..50): a longer window")
    ap.add_argument("--baseline", type=float, default=2.0, help="seconds measured before (0..60)")
    ap.add_argument("--flood-max", type=float, default=30.0, help="seconds the flood may last (1..120)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after it before the last sample (0..120)")
    ap.add_argument("--timeout", type=float, default=10.0, help="a login or ping slower than this fails")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (config, data, log)")
    a = ap.parse_args()
    if not (1 <= a.conns <= 2000 and 1 <= a.decls <= 20000 and 0 <= a.baseline <= 60 and
            1 <= a.flood_max <= 120 and 0 <= a.settle <= 120 and 0.5 <= a.timeout <= 60 and
            1 <= a.rounds <= 50):
        ap.error("a count or time is out of its bounds")
    if bool(a.server_bin) == bool(a.port):
        ap.error("give --server-bin, or --port (and --pid) of a running server")

    work = None
    srv = None
    pid = a.pid
    port = a.port
    try:
        if a.server_bin:
            work = tempfile.mkdtemp(prefix="petrel-header-flood.")
            srv = Server(a.server_bin, work, a.user, a.password)
            pid, port = srv.proc.pid, srv.port
        data = flood_header(a.decls)
        pinger = Pinger(port, a.user, a.password, a.timeout)
        logins = LoginLoop(port, a.user, a.password, a.timeout)
        pinger.start()
        logins.start()
        time.sleep(a.baseline)
        rss_before = proc_kb(pid, "VmRSS") if pid else -1
        cpu0 = proc_cpu_s(pid) if pid else -1
        me0 = resource.getrusage(resource.RUSAGE_SELF)
        pinger.phase = logins.phase = "flood"
        samples = []
        t0 = time.monotonic()
        fl = []
        for _ in range(a.rounds):
            fl += run_flood(port, a.conns, data, a.flood_max, pid, samples)
        flood_s = time.monotonic() - t0
        me1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu1 = proc_cpu_s(pid) if pid else -1
        rss_closed = proc_kb(pid, "VmRSS") if pid else -1
        pinger.phase = logins.phase = "after"
        time.sleep(a.settle)
        rss_settled = proc_kb(pid, "VmRSS") if pid else -1
        hwm = proc_kb(pid, "VmHWM") if pid else -1
        pinger.stop.set()
        logins.stop.set()
        pinger.join(a.timeout + 1)
        logins.join(a.timeout * 6 + 1)
        res = {
            "conns": a.conns, "rounds": a.rounds, "decls": a.decls, "header_bytes": len(data),
            "flood_s": round(flood_s, 2),
            "policy_violation": sum(POLICY.encode() in f.got for f in fl),
            "closed_by_server": sum(f.closed for f in fl),
            "header_accepted": sum(b"<stream:features" in f.got for f in fl),
            "bytes_sent_mb": round(sum(f.sent for f in fl) / 1e6, 1),
            "rss_before_kb": rss_before,
            "rss_peak_kb": max(samples + [rss_before]) if pid else -1,
            "vm_hwm_kb": hwm,
            "rss_closed_kb": rss_closed,
            "rss_after_settle_kb": rss_settled,
            "server_cpu_flood_s": round(cpu1 - cpu0, 2) if pid else -1,
            "generator_cpu_flood_s": round(me1.ru_utime + me1.ru_stime - me0.ru_utime - me0.ru_stime, 2),
            "ping": {k: stats(v) for k, v in pinger.rtts.items()},
            "login": {k: stats(v) for k, v in logins.times.items()},
            "login_failures": logins.failures,
            "pinger_error": pinger.error,
        }
        if a.json:
            print(json.dumps(res))
        else:
            for k, v in res.items():
                print("%-22s %s" % (k, v))
        ok = res["policy_violation"] == len(fl) and res["closed_by_server"] == len(fl)
        return 0 if ok else 1
    finally:
        if srv:
            srv.stop()
        if work and a.keep:
            print("kept %s" % work, file=sys.stderr)
        elif work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
