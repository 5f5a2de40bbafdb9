"""A spawned petreld for the interop tests: free port, temp data folder,
accounts made with petrelctl, clean stop (exit status 0 required), and a
result counter that prints "N passed, M failed"."""
import os, shutil, signal, socket, subprocess, tempfile, time

TOP_BUILD = os.environ.get("top_builddir",
                           os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
PETRELD = os.path.join(TOP_BUILD, "src", "petreld")
PETRELCTL = os.path.join(TOP_BUILD, "src", "petrelctl")


class Results:
    def __init__(self):
        self.items = []

    def check(self, name, ok, why=""):
        self.items.append(bool(ok))
        print(("ok" if ok else "not ok") + f" {len(self.items)} - {name}" + ("" if ok else f": {why}"),
              flush=True)
        return ok

    @property
    def failed(self):
        return self.items.count(False)

    def summary(self):
        print(f"{self.items.count(True)} passed, {self.failed} failed")
        return 1 if self.failed else 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    """petreld on 127.0.0.1:<port> (STARTTLS), host localhost."""

    def __init__(self, users, host_body=None):
        self.tmp = tempfile.mkdtemp(prefix="petrel-interop-")
        self.port = free_port()
        self.conf = os.path.join(self.tmp, "petrel.conf")
        self.logpath = os.path.join(self.tmp, "petreld.log")
        with open(self.conf, "w") as f:
            f.write(f'data_dir = "{self.tmp}/var"\nlog_level = "debug"\n'
                    f'listen "127.0.0.1:{self.port}" {{ type = "c2s" tls = "starttls" }}\n'
                    'host "localhost" { ' +
                    (host_body or 'modules = { "disco", "ping", "version", "time", "uptime" }') + ' }\n')
        # before the server's first start: the store does not exist yet
        self.users_out = subprocess.run([PETRELCTL, "-c", self.conf, "--create-store", "adduser", "--batch"],
                                        input=users,
                                        text=True, capture_output=True, timeout=120)
        self.log = open(self.logpath, "w")
        self.proc = subprocess.Popen([PETRELD, "-c", self.conf], stderr=self.log, stdout=self.log)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)

    def stop(self):
        """SIGTERM; the exit status (0 expected)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self.log.close()
        return rc

    def log_text(self):
        with open(self.logpath) as f:
            return f.read()

    def cleanup(self, keep):
        if keep:
            print("--- petreld.log (tail)")
            print("".join(self.log_text().splitlines(True)[-40:]))
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def binaries_present(*extra):
    for prog in (PETRELD, PETRELCTL) + extra:
        if not os.access(prog, os.X_OK):
            print(f"missing {prog}: build first")
            return False
    return True
