/* t_store.c — integration tests: a damaged store, the data-folder lock, relative paths. */
#include "harness.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void
rmtree(const char *path)
{
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static unsigned char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    unsigned char *b = NULL;
    long n = -1;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (b = malloc((size_t)n + 1)) != NULL && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b)
        *len = (size_t)n;
    return b;
}

static int
spit(const char *path, const void *b, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    int ok = fwrite(b, 1, len, f) == len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static long long
file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static const char *
status_str(int st)
{
    static char buf[64];
    if (st == -1)
        snprintf(buf, sizeof buf, "still running after the wait");
    else if (WIFSIGNALED(st))
        snprintf(buf, sizeof buf, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, sizeof buf, "exit status %d", WEXITSTATUS(st));
    return buf;
}

static int
write_text(const char *path, const char *text)
{
    return spit(path, text, strlen(text));
}

/* ---- a damaged store ------------------------------------------------------------------------
 * A stopped server's data.mdb cut to half, to 8 KiB and to nothing: petreld
 * refuses to start, naming the file, and so does petrelctl (no SIGBUS), and
 * neither changes the file; with the file restored, accounts log in again. */
static int
t_damaged_store(void)
{
    struct srv s;
    struct raw r;
    int ok = 0, started = 0;
    char data[400], out[16384];
    unsigned char *orig = NULL;
    size_t len = 0;
    memset(&r, 0, sizeof r);
    r.fd = -1;
    CHECK(srv_start(&s, "dm@localhost pw-dm\nother@localhost pw-other\n") == 0, "server start");
    started = 1;
    CHECK(raw_login(&r, s.port_starttls, NULL, "dm", "localhost", "pw-dm", "before"), "login before the damage");
    raw_close(&r);
    CHECK(srv_stop_keep(&s) == 0, "server stop");
    snprintf(data, sizeof data, "%s/store/data.mdb", s.dir);
    orig = slurp(data, &len);
    CHECK(orig != NULL && len >= 4 * 4096, "cannot read %s (%zu bytes)", data, len);

    static const struct { const char *name; int num, den; long fixed; } cases[] = {
        { "half its size", 1, 2, -1 },
        { "8 KiB", 0, 1, 8192 },
        { "0 bytes", 0, 1, 0 },
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t cut = cases[c].fixed >= 0 ? (size_t)cases[c].fixed : len * (size_t)cases[c].num / (size_t)cases[c].den;
        CHECK(spit(data, orig, cut) == 0, "cannot write %s", data);
        int st = petreld_run(&s, NULL, 5000, out, sizeof out);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0,
              "petreld on a data.mdb cut to %s: %s, not a refusal: %.300s", cases[c].name, status_str(st), out);
        CHECK(strstr(out, data) && strstr(out, "damaged") && strstr(out, "backup"),
              "petreld on a data.mdb cut to %s: the message does not name %s and what to do: %.400s",
              cases[c].name, data, out);
        CHECK(!strstr(out, "Sanitizer"), "petreld on a data.mdb cut to %s: %.400s", cases[c].name, out);
        const char *args[] = { "users", "localhost", NULL };
        int rc = ctl_run(NULL, s.conf, NULL, out, sizeof out, args);
        CHECK(rc == 1 && strstr(out, data) && strstr(out, "damaged"),
              "petrelctl users on a data.mdb cut to %s: exit %d (-1: a signal): %.400s", cases[c].name, rc, out);
        CHECK(file_size(data) == (long long)cut, "the damaged data.mdb (%s) was changed: now %lld bytes",
              cases[c].name, file_size(data));
    }
    /* the backup back in place: every account is there */
    CHECK(spit(data, orig, len) == 0, "cannot restore %s", data);
    CHECK(srv_respawn(&s) == 0, "server start on the restored store");
    CHECK(raw_login(&r, s.port_starttls, NULL, "dm", "localhost", "pw-dm", "after"),
          "after restoring data.mdb the account no longer logs in");
    ok = 1;
out:
    raw_close(&r);
    free(orig);
    if (started && s.pid > 0 && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* ---- two servers on one data folder -----------------------------------------------------------
 * A second petreld with other ports on the same data_dir refuses, naming the
 * first one's pid; the first keeps its control socket and its sessions. */
static int
t_second_server(void)
{
    struct srv s;
    int ok = 0, started = 0;
    char conf[400], lockf[400], out[8192], want[64];
    CHECK(srv_start(&s, WITNESS_USERS) == 0, "server start");
    started = 1;
    CHECK(witness_up(&s), "witnesses");
    int port = free_port();
    CHECK(port > 0, "no free port");
    snprintf(conf, sizeof conf, "%s/second.conf", s.dir);
    char text[1200];
    snprintf(text, sizeof text,
             "data_dir = \"%s\"\n"
             "listen \"127.0.0.1:%d\" { type = \"c2s\" tls = \"starttls\" }\n"
             "host \"localhost\" { modules = { \"disco\", \"ping\", \"version\" } }\n",
             s.dir, port);
    CHECK(write_text(conf, text) == 0, "cannot write %s", conf);
    int st = petreld_run(&s, conf, 5000, out, sizeof out);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0,
          "a second petreld on the same data folder: %s, not a refusal: %.300s", status_str(st), out);
    snprintf(want, sizeof want, "(pid %ld)", (long)s.pid);
    CHECK(strstr(out, want) && strstr(out, s.dir), "the refusal does not name the folder and %s: %.400s", want, out);
    CHECK(!port_open(port), "the second petreld left a listener on port %d", port);
    /* the lock file names the first one */
    snprintf(lockf, sizeof lockf, "%s/petreld.lock", s.dir);
    size_t n = 0;
    char *pidtext = (char *)slurp(lockf, &n);
    CHECK(pidtext != NULL, "no %s", lockf);
    pidtext[n] = '\0';
    long pid = strtol(pidtext, NULL, 10);
    free(pidtext);
    CHECK(pid == (long)s.pid, "%s says pid %ld, the server is %ld", lockf, pid, (long)s.pid);
    /* the first server still owns its control socket and its sessions */
    const char *args[] = { "sessions", NULL };
    int rc = srv_ctl(&s, NULL, out, sizeof out, args);
    CHECK(rc == 0 && strstr(out, "w1@localhost/witness "), "petrelctl sessions after the second start: %d: %.300s",
          rc, out);
    CHECK(witness_check(&s, "second-server"), "witnesses");
    ok = 1;
out:
    witness_down();
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* ---- relative paths ----------------------------------------------------------------------------
 * data_dir = ".." in <dir>/etc/petrel.conf is <dir>, whatever folder petrelctl
 * runs in and however the file is named: the account goes to the running
 * server's store and logs in, and no other store appears. */
static int
t_relative_data_dir(void)
{
    struct srv s;
    struct raw r;
    int ok = 0, started = 0;
    char etc[280], conf[300], away[280], deeper[300], stray[320], out[4096];
    memset(&r, 0, sizeof r);
    r.fd = -1;
    CHECK(srv_start(&s, NULL) == 0, "server start");
    started = 1;
    snprintf(etc, sizeof etc, "%s/etc", s.dir);
    snprintf(conf, sizeof conf, "%s/petrel.conf", etc);
    snprintf(away, sizeof away, "%s/elsewhere", s.dir);
    snprintf(deeper, sizeof deeper, "%s/deeper", away);
    CHECK(mkdir(etc, 0700) == 0 && mkdir(away, 0700) == 0 && mkdir(deeper, 0700) == 0, "mkdir: %s",
          strerror(errno));
    CHECK(write_text(conf, "data_dir = \"..\"\n"
                           "listen \"127.0.0.1:5222\" { type = \"c2s\" tls = \"starttls\" }\n"
                           "host \"localhost\" {}\n") == 0, "cannot write %s", conf);
    const char *add1[] = { "adduser", "rel1@localhost", NULL };
    int rc = ctl_run(deeper, conf, "pw-rel1\n", out, sizeof out, add1);
    CHECK(rc == 0, "petrelctl -c %s adduser from %s: exit %d: %s", conf, deeper, rc, out);
    const char *add2[] = { "adduser", "rel2@localhost", NULL };
    rc = ctl_run(deeper, "../../etc/petrel.conf", "pw-rel2\n", out, sizeof out, add2);
    CHECK(rc == 0, "petrelctl -c ../../etc/petrel.conf adduser from %s: exit %d: %s", deeper, rc, out);
    CHECK(raw_login(&r, s.port_starttls, NULL, "rel1", "localhost", "pw-rel1", "r"),
          "the account added from another folder (absolute -c) cannot log in");
    raw_close(&r);
    CHECK(raw_login(&r, s.port_starttls, NULL, "rel2", "localhost", "pw-rel2", "r"),
          "the account added from another folder (relative -c) cannot log in");
    snprintf(stray, sizeof stray, "%s/store", away);
    CHECK(file_size(stray) < 0, "petrelctl made a second store %s", stray);
    snprintf(stray, sizeof stray, "%s/store", deeper);
    CHECK(file_size(stray) < 0, "petrelctl made a second store %s", stray);
    ok = 1;
out:
    raw_close(&r);
    if (started && srv_stop(&s) < 0)
        ok = 0;
    return ok;
}

/* petrelctl on a configuration whose store does not exist yet (petreld never
 * started) refuses, naming the path, and makes nothing, unless --create-store. */
static int
t_ctl_no_store(void)
{
    char dir[128], conf[200], store[200], out[4096];
    int ok = 0;
    snprintf(dir, sizeof dir, "/tmp/pt-itest-nostore.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        fail_reason("mkdtemp: %s", strerror(errno));
        return 0;
    }
    snprintf(conf, sizeof conf, "%s/server.conf", dir);
    snprintf(store, sizeof store, "%s/data/store", dir);
    CHECK(write_text(conf, "data_dir = \"data\"\n"
                           "listen \"127.0.0.1:5222\" { type = \"c2s\" tls = \"starttls\" }\n"
                           "host \"localhost\" {}\n") == 0, "cannot write %s", conf);
    const char *add[] = { "adduser", "nd@localhost", NULL };
    int rc = ctl_run(NULL, conf, "pw-nd\n", out, sizeof out, add);
    CHECK(rc == 1 && strstr(out, store) && strstr(out, "no store"),
          "adduser without a store: exit %d (want 1 and a message naming %s): %s", rc, store, out);
    const char *users[] = { "users", "localhost", NULL };
    rc = ctl_run(NULL, conf, NULL, out, sizeof out, users);
    CHECK(rc == 1 && strstr(out, store), "users without a store: exit %d: %s", rc, out);
    snprintf(store, sizeof store, "%s/data", dir);
    CHECK(file_size(store) < 0, "petrelctl made %s", store);
    /* asked to: made, and the account is in it */
    const char *create[] = { "--create-store", "adduser", "nd@localhost", NULL };
    rc = ctl_run(NULL, conf, "pw-nd\n", out, sizeof out, create);
    CHECK(rc == 0, "--create-store adduser: exit %d: %s", rc, out);
    snprintf(store, sizeof store, "%s/data/store/data.mdb", dir);
    CHECK(file_size(store) > 0, "--create-store made no %s", store);
    rc = ctl_run(NULL, conf, NULL, out, sizeof out, users);
    CHECK(rc == 0 && strcmp(out, "nd@localhost\n") == 0, "users after --create-store: exit %d: %s", rc, out);
    ok = 1;
out:
    rmtree(dir);
    return ok;
}

const struct test t_store_tests[] = {
    { "store/damaged-store-refused", t_damaged_store, 1 },
    { "store/second-server-same-data-dir-refused", t_second_server, 1 },
    { "config/relative-data-dir-from-another-folder", t_relative_data_dir, 1 },
    { "ctl/no-store-refused-unless-create-store", t_ctl_no_store, 1 },
    ITEST_END
};
