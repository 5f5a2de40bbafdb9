/* harness.c — see harness.h */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#define RAW_MAX_BUF (64u << 20)

/* ---- misc ------------------------------------------------------------------------------- */

int itest_verbose;
static char reason[2048];

uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void
msleep(unsigned ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void
fail_reason(const char *fmt, ...)
{
    if (reason[0])
        return;                 /* keep the first reason: it is the cause */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    for (char *p = reason; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
}

const char *fail_reason_get(void) { return reason[0] ? reason : "failed (no reason given)"; }
void fail_reason_clear(void) { reason[0] = '\0'; }

void
vlog(const char *fmt, ...)
{
    if (!itest_verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    va_end(ap);
}

static char *
b64enc(const unsigned char *in, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out == NULL)
        abort();
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

/* Decodes standard base64; returns the length or -1. out must hold 3*len/4+3. */
static int
b64dec(const char *in, unsigned char *out)
{
    size_t len = strlen(in);
    if (len == 0)
        return 0;
    if (len % 4)
        return -1;
    int n = EVP_DecodeBlock(out, (const unsigned char *)in, (int)len);
    if (n < 0)
        return -1;
    if (in[len - 1] == '=')
        n--;
    if (in[len - 2] == '=')
        n--;
    out[n] = '\0';
    return n;
}

/* ---- the server ---------------------------------------------------------------------------- */

const char *
builddir(void)
{
    const char *b = getenv("top_builddir");
    return b && *b ? b : ".";
}

static int
free_ports(int *ports, int n)
{
    int fds[8];
    int rc = 0;
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t al = sizeof a;
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) < 0 ||
            getsockname(fds[i], (struct sockaddr *)&a, &al) < 0) {
            rc = -1;
            ports[i] = 0;
        } else {
            ports[i] = ntohs(a.sin_port);
        }
    }
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return rc;
}

static int
port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

void
srv_log_tail(const struct srv *s, int lines)
{
    FILE *f = fopen(s->log, "r");
    if (f == NULL) {
        printf("# (no server log at %s)\n", s->log);
        return;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > 65536 ? size - 65536 : 0;
    fseek(f, from, SEEK_SET);
    char *buf = malloc(65537);
    size_t n = buf ? fread(buf, 1, 65536, f) : 0;
    fclose(f);
    if (buf == NULL)
        return;
    buf[n] = '\0';
    int count = 0;
    char *p = buf + n;
    while (p > buf && count <= lines) {
        p--;
        if (*p == '\n')
            count++;
    }
    if (*p == '\n')
        p++;
    printf("# ---- last lines of the server log %s ----\n", s->log);
    for (char *line = strtok(p, "\n"); line; line = strtok(NULL, "\n"))
        printf("# %s\n", line);
    printf("# ----\n");
    fflush(stdout);
    free(buf);
}

int
srv_ctl(struct srv *s, const char *stdin_data, char *out, size_t outlen, const char *const *args)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/src/petrelctl", s->builddir);
    const char *argv[32];
    int n = 0;
    argv[n++] = path;
    argv[n++] = "-c";
    argv[n++] = s->conf;
    for (int i = 0; args[i] && n < 30; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int in[2], o[2];
    if (pipe(in) < 0)
        return -1;
    if (pipe(o) < 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(o[1], 1);
        dup2(o[1], 2);
        close(in[0]);
        close(in[1]);
        close(o[0]);
        close(o[1]);
        execv(path, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(o[1]);
    if (stdin_data) {
        size_t left = strlen(stdin_data);
        const char *p = stdin_data;
        while (left > 0) {
            ssize_t w = write(in[1], p, left);
            if (w <= 0)
                break;
            p += w;
            left -= (size_t)w;
        }
    }
    close(in[1]);
    size_t got = 0;
    uint64_t deadline = now_ms() + 15000;
    for (;;) {
        int64_t left = (int64_t)(deadline - now_ms());
        if (left <= 0) {
            kill(pid, SIGKILL);
            break;
        }
        struct pollfd pfd = { o[0], POLLIN, 0 };
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        char tmp[4096];
        ssize_t r = read(o[0], tmp, sizeof tmp);
        if (r <= 0)
            break;
        if (out && got + 1 < outlen) {
            size_t take = (size_t)r < outlen - 1 - got ? (size_t)r : outlen - 1 - got;
            memcpy(out + got, tmp, take);
            got += take;
        }
    }
    if (out && outlen)
        out[got] = '\0';
    close(o[0]);
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    vlog("petrelctl %s %s -> %d: %s", args[0], args[1] ? args[1] : "",
         WIFEXITED(st) ? WEXITSTATUS(st) : -1, out ? out : "");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Start petreld on the prepared folder and wait until both ports accept. */
static int
srv_spawn(struct srv *s)
{
    const char *exe = s->exe;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        fail_reason("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);       /* never outlive the test program */
        int lf = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        int nf = open("/dev/null", O_RDONLY);
        if (lf >= 0) {
            dup2(lf, 1);
            dup2(lf, 2);
            close(lf);
        }
        if (nf >= 0) {
            dup2(nf, 0);
            close(nf);
        }
        char link[400];
        snprintf(link, sizeof link, "%s/itest-server", s->dir);
        if (symlink(exe, link) == 0 || errno == EEXIST)
            execl(link, "itest-server", "-c", s->conf, (char *)NULL);
        execl(exe, exe, "-c", s->conf, (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", exe, strerror(errno));
        _exit(127);
    }
    s->pid = pid;
    uint64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = -1;
            fail_reason("petreld exited at start-up (status %d)", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
            srv_log_tail(s, 30);
            return -1;
        }
        if (port_accepts(s->port_starttls) && port_accepts(s->port_tls)) {
            vlog("petreld %d up on ports %d (STARTTLS) and %d (TLS), data in %s", (int)pid,
                 s->port_starttls, s->port_tls, s->dir);
            return 0;
        }
        msleep(50);
    }
    fail_reason("petreld did not accept connections within 10 s");
    srv_log_tail(s, 30);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    s->pid = -1;
    return -1;
}


int
srv_start(struct srv *s, const char *users)
{
    return srv_start_opts(s, users, NULL);
}

int
srv_start_opts(struct srv *s, const char *users, const struct srv_opts *o)
{
    static const struct srv_opts defaults = { NULL, 2, 2, NULL };
    if (o == NULL)
        o = &defaults;
    memset(s, 0, sizeof *s);
    s->pid = -1;
    snprintf(s->builddir, sizeof s->builddir, "%s", builddir());
    char rel[1200];
    char *exe = s->exe;
    snprintf(rel, sizeof rel, "%s/src/petreld", s->builddir);
    if (realpath(rel, exe) == NULL)
        snprintf(exe, sizeof s->exe, "%s", rel);
    if (access(exe, X_OK) != 0) {
        fail_reason("%s is missing (build it: make src/petreld src/petrelctl; or set top_builddir)", exe);
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    /* the control socket path (data_dir/petreld.sock) must fit in sun_path */
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 60)
        tmp = "/tmp";
    /* No "petrel" in the server's command line or process name: other jobs on a
     * shared machine that stop their servers by name must not hit this one. */
    snprintf(s->dir, sizeof s->dir, "%s/pt-itest.XXXXXX", tmp);
    if (mkdtemp(s->dir) == NULL) {
        fail_reason("mkdtemp %s: %s", s->dir, strerror(errno));
        return -1;
    }
    snprintf(s->conf, sizeof s->conf, "%s/server.conf", s->dir);
    snprintf(s->log, sizeof s->log, "%s/petreld.log", s->dir);
    int ports[2];
    if (free_ports(ports, 2) < 0) {
        fail_reason("cannot find free ports");
        return -1;
    }
    s->port_starttls = ports[0];
    s->port_tls = ports[1];
    FILE *f = fopen(s->conf, "w");
    if (f == NULL) {
        fail_reason("cannot write %s", s->conf);
        return -1;
    }
    fprintf(f,
            "# written by tests/integration/harness.c\n"
            "data_dir = \"%s\"\n"
            "log_level = \"debug\"\n"
            "%s\n"
            "limits { max_stanza_size = 524288 max_depth = 64 %s }\n"
            "listen \"127.0.0.1:%d\" { type = \"c2s\" tls = \"starttls\" }\n"
            "listen \"127.0.0.1:%d\" { type = \"c2s\" tls = \"direct\" }\n"
            "host \"localhost\" {\n"
            "    modules = { \"disco\", \"ping\", \"time\", \"uptime\", \"version\" }\n"
            "    ping { interval = %d timeout = %d }\n"
            "}\n"
            "host \"example.test\" {\n"
            "    modules = { \"disco\", \"ping\", \"version\" }\n"
            "}\n",
            s->dir, o->top ? o->top : "", o->limits ? o->limits : "", s->port_starttls, s->port_tls, o->ping_interval, o->ping_timeout);
    fclose(f);

    if (users && *users) {
        char out[4096];
        const char *args[] = { "--create-store", "adduser", "--batch", NULL };  /* before the first start */
        int rc = srv_ctl(s, users, out, sizeof out, args);
        if (rc != 0) {
            fail_reason("petrelctl adduser --batch failed (%d): %s", rc, out);
            return -1;
        }
    }

    return srv_spawn(s);
}

const char *
srv_trouble(struct srv *s)
{
    static char why[300];
    if (s->pid <= 0)
        return NULL;
    int st;
    why[0] = '\0';
    s->dying = 0;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
        s->pid = -1;
        s->exit_status = st;
        if (WIFSIGNALED(st))
            snprintf(why, sizeof why, "petreld died of signal %d", WTERMSIG(st));
        else
            snprintf(why, sizeof why, "petreld exited with status %d", WEXITSTATUS(st));
    }
    FILE *f = fopen(s->log, "r");
    if (f) {
        char line[1024];
        fseek(f, s->log_off, SEEK_SET);
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            int fatal = (strstr(line, ": shutting down") && strstr(line, "signal ")) ||
                        strstr(line, "ERROR: AddressSanitizer") || strstr(line, "ERROR: LeakSanitizer");
            if (fatal || strstr(line, "runtime error:")) {
                s->dying = fatal;
                size_t n = strlen(why);
                snprintf(why + n, sizeof why - n, "%s(log: %.160s)", n ? " " : "", line);
                break;
            }
        }
        s->log_off = ftell(f);
        fclose(f);
    }
    return why[0] ? why : NULL;
}

int
srv_settle(struct srv *s, int timeout_ms)
{
    if (s->pid <= 0)
        return 1;
    /* a sanitizer report or a stop in progress: the process is about to end */
    if (!s->dying)
        return 0;
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    int st;
    while (now_ms() < deadline) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
            s->pid = -1;
            s->exit_status = st;
            return 1;
        }
        msleep(20);
    }
    return 1;   /* srv_respawn() kills it */
}

int
srv_respawn(struct srv *s)
{
    if (s->pid > 0) {
        /* stopping (a signal from elsewhere): let it finish */
        uint64_t deadline = now_ms() + 10000;
        int st;
        while (now_ms() < deadline && waitpid(s->pid, &st, WNOHANG) != s->pid)
            msleep(20);
        if (now_ms() >= deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
        }
        s->pid = -1;
    }
    return srv_spawn(s);
}

int
srv_stop(struct srv *s)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    uint64_t deadline = now_ms() + 10000;
    int st = 0, done = 0;
    while (now_ms() < deadline) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid) {
            done = 1;
            break;
        }
        msleep(20);
    }
    if (!done) {
        printf("# petreld did not exit within 10 s of SIGTERM: killing it\n");
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
    }
    s->pid = -1;
    s->exit_status = st;
    int ok = done && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok) {
        if (WIFEXITED(st))
            fail_reason("petreld exit status %d after SIGTERM (data and log kept in %s)", WEXITSTATUS(st),
                        s->dir);
        else if (WIFSIGNALED(st))
            fail_reason("petreld killed by signal %d (data and log kept in %s)", WTERMSIG(st), s->dir);
        srv_log_tail(s, 60);
        return -1;
    }
    if (getenv("ITEST_KEEP") == NULL)
        nftw(s->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

/* ---- raw client ------------------------------------------------------------------------------- */

static SSL_CTX *raw_ssl_ctx;

static SSL_CTX *
client_ctx(void)
{
    if (raw_ssl_ctx == NULL) {
        raw_ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (raw_ssl_ctx == NULL)
            abort();
        SSL_CTX_set_verify(raw_ssl_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_min_proto_version(raw_ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_mode(raw_ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    return raw_ssl_ctx;
}

int raw_tls_max_version;

static SSL *
new_client_ssl(void)
{
    SSL *ssl = SSL_new(client_ctx());
    if (ssl == NULL)
        abort();
    if (raw_tls_max_version)
        SSL_set_max_proto_version(ssl, raw_tls_max_version);
    return ssl;
}

const char *
fresh_src_ip(void)
{
    static char ip[32];
    static unsigned next = 10;
    snprintf(ip, sizeof ip, "127.0.%u.%u", next / 250, 10 + next % 240);
    next++;
    return ip;
}

static void
buf_append(struct raw *r, const char *data, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 8192;
        while (cap < r->len + n + 1)
            cap *= 2;
        if (cap > RAW_MAX_BUF) {
            r->closed = 1;
            return;
        }
        char *b = realloc(r->buf, cap);
        if (b == NULL)
            abort();
        r->buf = b;
        r->cap = cap;
    }
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

/* Read whatever is available now, without blocking. */
static void
read_avail(struct raw *r)
{
    char tmp[65536];
    while (!r->closed) {
        if (r->ssl) {
            ERR_clear_error();
            int n = SSL_read(r->ssl, tmp, sizeof tmp);
            if (n > 0) {
                buf_append(r, tmp, (size_t)n);
                continue;
            }
            int e = SSL_get_error(r->ssl, n);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return;
            r->closed = 1;
            return;
        }
        ssize_t n = recv(r->fd, tmp, sizeof tmp, 0);
        if (n > 0) {
            buf_append(r, tmp, (size_t)n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        r->closed = 1;
        return;
    }
}

int raw_rcvbuf;
int raw_cork_handshake;

int
raw_connect(struct raw *r, int port, const char *src_ip, int direct_tls, const char *sni)
{
    memset(r, 0, sizeof *r);
    r->fd = -1;
    r->auto_pong = 1;
    snprintf(r->domain, sizeof r->domain, "localhost");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fail_reason("socket: %s", strerror(errno));
        return -1;
    }
    if (raw_rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &raw_rcvbuf, sizeof raw_rcvbuf);
    if (src_ip) {
        struct sockaddr_in b = { .sin_family = AF_INET, .sin_port = 0 };
        if (inet_pton(AF_INET, src_ip, &b.sin_addr) != 1 || bind(fd, (struct sockaddr *)&b, sizeof b) < 0) {
            fail_reason("bind to source %s: %s", src_ip, strerror(errno));
            close(fd);
            return -1;
        }
    }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        fail_reason("connect to port %d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    r->fd = fd;
    if (raw_cork_handshake)
        setsockopt(fd, IPPROTO_TCP, TCP_CORK, &one, sizeof one);
    if (direct_tls) {
        r->ssl = new_client_ssl();
        if (sni)
            SSL_set_tlsext_host_name(r->ssl, sni);
        SSL_set_fd(r->ssl, fd);
        uint64_t deadline = now_ms() + 5000;
        for (;;) {
            ERR_clear_error();
            int rc = SSL_connect(r->ssl);
            if (rc == 1)
                break;
            int e = SSL_get_error(r->ssl, rc);
            int64_t left = (int64_t)(deadline - now_ms());
            if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || left <= 0) {
                fail_reason("TLS handshake failed (%d)", e);
                raw_close(r);
                return -1;
            }
            struct pollfd p = { fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0 };
            poll(&p, 1, (int)left);
        }
    }
    return 0;
}

int
raw_cork(struct raw *r, int on)
{
    return setsockopt(r->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
}

void
raw_close(struct raw *r)
{
    if (r->ssl) {
        SSL_free(r->ssl);
        r->ssl = NULL;
    }
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = r->pos = 0;
}

int
raw_send(struct raw *r, const void *data, size_t len)
{
    const char *p = data;
    uint64_t deadline = now_ms() + 15000;
    while (len > 0) {
        if (r->closed || r->fd < 0)
            return -1;
        ssize_t n;
        int want_read = 0;
        size_t chunk = len > 16384 ? 16384 : len;
        if (r->ssl) {
            ERR_clear_error();
            int w = SSL_write(r->ssl, p, (int)chunk);
            if (w > 0) {
                n = w;
            } else {
                int e = SSL_get_error(r->ssl, w);
                if (e == SSL_ERROR_WANT_WRITE)
                    n = 0;
                else if (e == SSL_ERROR_WANT_READ)
                    n = 0, want_read = 1;
                else {
                    r->closed = 1;
                    return -1;
                }
            }
        } else {
            n = send(r->fd, p, chunk, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                    r->closed = 1;
                    return -1;
                }
                n = 0;
            }
        }
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        int64_t left = (int64_t)(deadline - now_ms());
        if (left <= 0) {
            fail_reason("sending timed out");
            return -1;
        }
        struct pollfd pf = { r->fd, (short)(want_read ? POLLIN : POLLIN | POLLOUT), 0 };
        poll(&pf, 1, left > 100 ? 100 : (int)left);
        if (pf.revents & (POLLIN | POLLHUP | POLLERR))
            read_avail(r);      /* keep reading so that neither side blocks */
    }
    return 0;
}

int
raw_sendf(struct raw *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    vlog("raw %p >> %.300s", (void *)r, s);
    int rc = raw_send(r, s, (size_t)n);
    free(s);
    return rc;
}

/* Find attribute `name` in the tag that starts at tag (up to the first '>'). */
static int
tag_attr(const char *tag, const char *name, char *out, size_t outlen)
{
    const char *end = strchr(tag, '>');
    if (end == NULL)
        return 0;
    size_t nl = strlen(name);
    for (const char *p = tag + 1; p < end; p++) {
        if ((p[-1] == ' ') && strncmp(p, name, nl) == 0 && p[nl] == '=' && (p[nl + 1] == '\'' || p[nl + 1] == '"')) {
            char q = p[nl + 1];
            const char *v = p + nl + 2, *ve = strchr(v, q);
            if (ve == NULL || ve > end)
                return 0;
            size_t l = (size_t)(ve - v);
            if (l >= outlen)
                l = outlen - 1;
            memcpy(out, v, l);
            out[l] = '\0';
            return 1;
        }
    }
    return 0;
}

static void
answer_pings(struct raw *r)
{
    static const char ping[] = "<ping xmlns='urn:xmpp:ping'/>";
    for (;;) {
        char *hit = strstr(r->buf + r->ping_pos, ping);
        if (hit == NULL)
            return;
        size_t hitpos = (size_t)(hit - r->buf);
        r->ping_pos = hitpos + sizeof ping - 1;
        /* the <iq that holds it: the last "<iq " before the hit */
        char *iq = NULL;
        for (char *p = hit; p >= r->buf; p--)
            if (strncmp(p, "<iq ", 4) == 0) {
                iq = p;
                break;
            }
        char id[256], type[32], from[256];
        if (iq == NULL || !tag_attr(iq, "id", id, sizeof id) || !tag_attr(iq, "type", type, sizeof type) ||
            strcmp(type, "get") != 0)
            continue;
        if (!tag_attr(iq, "from", from, sizeof from))
            snprintf(from, sizeof from, "%s", r->domain);
        if (r->auto_pong) {
            if (r->pong_delay_ms)
                msleep(r->pong_delay_ms);
            vlog("raw %p: answering ping %s", (void *)r, id);
            raw_sendf(r, "<iq type='result' id='%s' to='%s'/>", id, from);
        }
    }
}

int
raw_poll(struct raw *r, int timeout_ms)
{
    if (r->closed || r->fd < 0)
        return -1;
    size_t before = r->len;
    if (!(r->ssl && SSL_pending(r->ssl) > 0)) {
        struct pollfd p = { r->fd, POLLIN, 0 };
        int pr = poll(&p, 1, timeout_ms);
        if (pr <= 0)
            return 0;
    }
    read_avail(r);
    if (r->len > before) {
        vlog("raw %p << %.*s", (void *)r, (int)(r->len - before > 600 ? 600 : r->len - before), r->buf + before);
        answer_pings(r);
    }
    if (r->closed && r->len == before)
        return -1;
    return (int)(r->len - before);
}

void
raw_poll_many(struct raw **rs, int n, int timeout_ms)
{
    struct pollfd pf[32];
    int m = 0, pending = 0;
    for (int i = 0; i < n && m < 32; i++) {
        if (rs[i]->closed || rs[i]->fd < 0)
            continue;
        if (rs[i]->ssl && SSL_pending(rs[i]->ssl) > 0)
            pending = 1;
        pf[m].fd = rs[i]->fd;
        pf[m].events = POLLIN;
        pf[m].revents = 0;
        m++;
    }
    if (m == 0) {
        msleep((unsigned)timeout_ms);
        return;
    }
    if (poll(pf, (nfds_t)m, pending ? 0 : timeout_ms) < 0)
        return;
    for (int i = 0; i < n; i++)
        if (!rs[i]->closed && rs[i]->fd >= 0)
            raw_poll(rs[i], 0);
}

int
raw_seen(const struct raw *r, const char *needle)
{
    return r->buf && strstr(r->buf, needle) != NULL;
}

int
raw_wait(struct raw *r, const char *needle, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (r->buf) {
            char *hit = strstr(r->buf + r->pos, needle);
            if (hit) {
                r->pos = (size_t)(hit - r->buf) + strlen(needle);
                return 1;
            }
        }
        if (r->closed)
            return 0;
        int64_t left = (int64_t)(deadline - now_ms());
        if (left <= 0)
            return 0;
        raw_poll(r, left > 50 ? 50 : (int)left);
    }
}

int
raw_wait_closed(struct raw *r, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    while (!r->closed) {
        int64_t left = (int64_t)(deadline - now_ms());
        if (left <= 0)
            return 0;
        raw_poll(r, left > 50 ? 50 : (int)left);
    }
    return 1;
}

int
raw_extract(struct raw *r, const char *start, const char *end, char *out, size_t outlen, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    if (!raw_wait(r, start, timeout_ms))
        return 0;
    size_t from = r->pos;
    int64_t left = (int64_t)(deadline - now_ms());
    if (!raw_wait(r, end, left > 0 ? (int)left : 0))
        return 0;
    size_t to = r->pos - strlen(end);
    size_t n = to - from;
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, r->buf + from, n);
    out[n] = '\0';
    return 1;
}

const char *
raw_tail(const struct raw *r, size_t n)
{
    if (r->buf == NULL)
        return "(nothing received)";
    return r->len > n ? r->buf + r->len - n : r->buf;
}

int
raw_stream_header(struct raw *r, const char *to, const char *version)
{
    char tobuf[300] = "", verbuf[64] = "";
    if (to)
        snprintf(tobuf, sizeof tobuf, " to='%s'", to);
    if (version)
        snprintf(verbuf, sizeof verbuf, " version='%s'", version);
    return raw_sendf(r, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                        "xmlns:stream='http://etherx.jabber.org/streams'%s%s xml:lang='en'>",
                     tobuf, verbuf);
}

/* Where the next <stream:features> starts (the server may also write it as
 * <features xmlns='http://etherx.jabber.org/streams'>), from `from` on; NULL if none. */
static const char *
features_start(const char *from, int *prefixed)
{
    const char *a = strstr(from, "<stream:features");
    const char *b = strstr(from, "<features xmlns='http://etherx.jabber.org/streams'");
    if (a && (!b || a < b)) {
        *prefixed = 1;
        return a;
    }
    *prefixed = 0;
    return b;
}

const char *
raw_last_features(const struct raw *r)
{
    const char *last = NULL, *p = r->buf;
    int pre;
    while (p && (p = features_start(p, &pre)) != NULL) {
        last = p;
        p++;
    }
    return last ? last : "";
}

static int
wait_features(struct raw *r)
{
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        int pre;
        const char *st = r->buf ? features_start(r->buf + r->pos, &pre) : NULL;
        if (st) {
            const char *gt = strchr(st, '>');
            const char *end = NULL;
            size_t endlen = 0;
            if (gt && gt[-1] == '/') {
                end = gt;
                endlen = 1;
            } else if (gt) {
                const char *close = pre ? "</stream:features>" : "</features>";
                end = strstr(gt, close);
                endlen = strlen(close);
            }
            if (end) {
                r->pos = (size_t)(end - r->buf) + endlen;
                return 1;
            }
        }
        int64_t left = (int64_t)(deadline - now_ms());
        if (r->closed || left <= 0) {
            fail_reason("no stream features (got: %s)", raw_tail(r, 300));
            return 0;
        }
        raw_poll(r, left > 50 ? 50 : (int)left);
    }
}

int
raw_open_stream(struct raw *r, const char *to)
{
    if (to && to != r->domain)
        snprintf(r->domain, sizeof r->domain, "%s", to);
    if (raw_stream_header(r, to, "1.0") < 0)
        return 0;
    return wait_features(r);
}

int
raw_starttls(struct raw *r, const char *to, const char *sni)
{
    if (!raw_open_stream(r, to))
        return 0;
    if (!raw_seen(r, "<starttls xmlns='" NS_TLS "'")) {
        fail_reason("no <starttls/> offered: %s", raw_tail(r, 300));
        return 0;
    }
    raw_sendf(r, "<starttls xmlns='" NS_TLS "'/>");
    if (!raw_wait(r, "<proceed xmlns='" NS_TLS "'/>", 5000)) {
        fail_reason("no <proceed/>: %s", raw_tail(r, 300));
        return 0;
    }
    r->pos = r->len;
    r->ping_pos = r->len;
    r->ssl = new_client_ssl();
    if (sni)
        SSL_set_tlsext_host_name(r->ssl, sni);
    SSL_set_fd(r->ssl, r->fd);
    uint64_t deadline = now_ms() + 5000;
    for (;;) {
        ERR_clear_error();
        int rc = SSL_connect(r->ssl);
        if (rc == 1)
            break;
        int e = SSL_get_error(r->ssl, rc);
        int64_t left = (int64_t)(deadline - now_ms());
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || left <= 0) {
            fail_reason("TLS handshake after STARTTLS failed (%d)", e);
            return 0;
        }
        struct pollfd p = { r->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0 };
        poll(&p, 1, (int)left);
    }
    return raw_open_stream(r, to);
}

int
raw_connect_tls(struct raw *r, int port, int direct, const char *src_ip, const char *domain)
{
    if (raw_connect(r, port, src_ip, direct, domain) < 0)
        return 0;
    snprintf(r->domain, sizeof r->domain, "%s", domain);
    if (direct)
        return raw_open_stream(r, domain);
    return raw_starttls(r, domain, domain);
}

/* Wait for the next SASL answer: 1 challenge, 2 success (data in out, base64), 0 failure
 * (condition in out), -1 nothing. */
static int
sasl_answer(struct raw *r, char *out, size_t outlen, int timeout_ms)
{
    static const char *const names[] = { "challenge", "success", "failure" };
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    out[0] = '\0';
    for (;;) {
        char *best = NULL;
        int which = -1;
        for (int i = 0; i < 3; i++) {
            char tag[64];
            snprintf(tag, sizeof tag, "<%s xmlns='" NS_SASL "'", names[i]);
            char *h = r->buf ? strstr(r->buf + r->pos, tag) : NULL;
            if (h && (best == NULL || h < best)) {
                best = h;
                which = i;
            }
        }
        if (best) {
            char close[32];
            snprintf(close, sizeof close, "</%s>", names[which]);
            char *gt = strchr(best, '>');
            char *end = gt ? (gt[-1] == '/' ? gt : strstr(gt, close)) : NULL;
            if (end) {
                size_t content_from = (size_t)(gt - r->buf) + 1;
                size_t content_to = gt[-1] == '/' ? content_from : (size_t)(end - r->buf);
                r->pos = gt[-1] == '/' ? content_from : content_to + strlen(close);
                if (which == 2) {
                    /* <failure xmlns='...'><cond/>[<text>..</text>]</failure> */
                    const char *c = r->buf + content_from;
                    size_t n = 0;
                    if (*c == '<') {
                        c++;
                        while (c[n] && c[n] != '/' && c[n] != '>' && c[n] != ' ')
                            n++;
                    }
                    if (n >= outlen)
                        n = outlen - 1;
                    memcpy(out, c, n);
                    out[n] = '\0';
                    return 0;
                }
                size_t n = content_to - content_from;
                if (n >= outlen)
                    n = outlen - 1;
                memcpy(out, r->buf + content_from, n);
                out[n] = '\0';
                return which == 0 ? 1 : 2;
            }
        }
        int64_t left = (int64_t)(deadline - now_ms());
        if (r->closed || left <= 0)
            return -1;
        raw_poll(r, left > 50 ? 50 : (int)left);
    }
}

static const EVP_MD *
scram_md(const char *mech)
{
    if (strncmp(mech, "SCRAM-SHA-1", 11) == 0 && (mech[11] == '\0' || mech[11] == '-'))
        return EVP_sha1();
    if (strncmp(mech, "SCRAM-SHA-256", 13) == 0)
        return EVP_sha256();
    if (strncmp(mech, "SCRAM-SHA-512", 13) == 0)
        return EVP_sha512();
    return NULL;
}

/* Channel-binding data of this TLS connection, as the client computes it. */
static int
cb_data(struct raw *r, const char *type, unsigned char *out, size_t *len)
{
    if (r->ssl == NULL)
        return -1;
    if (strcmp(type, "tls-exporter") == 0) {
        if (SSL_export_keying_material(r->ssl, out, 32, "EXPORTER-Channel-Binding", 24, NULL, 0, 0) != 1)
            return -1;
        *len = 32;
        return 0;
    }
    if (strcmp(type, "tls-unique") == 0) {
        /* RFC 5929: the first Finished message of the latest handshake */
        size_t n = SSL_session_reused(r->ssl) ? SSL_get_peer_finished(r->ssl, out, 64)
                                              : SSL_get_finished(r->ssl, out, 64);
        if (n == 0 || n > 64)
            return -1;
        *len = n;
        return 0;
    }
    if (strcmp(type, "tls-server-end-point") == 0) {
        X509 *cert = SSL_get1_peer_certificate(r->ssl);
        if (cert == NULL)
            return -1;
        int md_nid, pk_nid;
        const EVP_MD *md = NULL;
        if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, &pk_nid))
            md = EVP_get_digestbynid(md_nid);
        if (md == NULL || md_nid == NID_md5 || md_nid == NID_sha1)
            md = EVP_sha256();
        unsigned n = 0;
        int ok = X509_digest(cert, md, out, &n);
        X509_free(cert);
        *len = n;
        return ok ? 0 : -1;
    }
    return -1;
}

int
raw_auth(struct raw *r, const char *mech, const char *cbtype, const char *user, const char *pass,
         char *cond, size_t condlen)
{
    char dummy[64];
    if (cond == NULL) {
        cond = dummy;
        condlen = sizeof dummy;
    }
    cond[0] = '\0';
    char ans[4096];
    if (strcmp(mech, "PLAIN") == 0) {
        size_t ul = strlen(user), pl = strlen(pass);
        unsigned char *msg = malloc(ul + pl + 2);
        msg[0] = '\0';
        memcpy(msg + 1, user, ul);
        msg[1 + ul] = '\0';
        memcpy(msg + 2 + ul, pass, pl);
        char *b = b64enc(msg, ul + pl + 2);
        free(msg);
        raw_sendf(r, "<auth xmlns='" NS_SASL "' mechanism='PLAIN'>%s</auth>", b);
        free(b);
        int a = sasl_answer(r, ans, sizeof ans, 5000);
        if (a == 0) {
            snprintf(cond, condlen, "%s", ans);
            return 0;
        }
        if (a == 2)
            return 1;
        fail_reason("PLAIN: unexpected answer: %s", raw_tail(r, 300));
        return -1;
    }
    const EVP_MD *md = scram_md(mech);
    if (md == NULL) {
        fail_reason("unknown mechanism %s", mech);
        return -1;
    }
    int plus = strstr(mech, "-PLUS") != NULL;
    size_t hlen = (size_t)EVP_MD_get_size(md);
    unsigned char rnd[18];
    RAND_bytes(rnd, sizeof rnd);
    char *cnonce = b64enc(rnd, sizeof rnd);
    char gs2[64];
    if (plus)
        snprintf(gs2, sizeof gs2, "p=%s,,", cbtype ? cbtype : "tls-exporter");
    else
        snprintf(gs2, sizeof gs2, "n,,");
    char cfb[600];
    snprintf(cfb, sizeof cfb, "n=%s,r=%s", user, cnonce);
    char first[700];
    snprintf(first, sizeof first, "%s%s", gs2, cfb);
    char *b = b64enc((unsigned char *)first, strlen(first));
    raw_sendf(r, "<auth xmlns='" NS_SASL "' mechanism='%s'>%s</auth>", mech, b);
    free(b);
    int rc = -1;
    int a = sasl_answer(r, ans, sizeof ans, 5000);
    if (a == 0) {
        snprintf(cond, condlen, "%s", ans);
        rc = 0;
        goto done;
    }
    if (a != 1) {
        fail_reason("%s: no challenge: %s", mech, raw_tail(r, 300));
        goto done;
    }
    unsigned char sf[4096];
    int sfl = b64dec(ans, sf);
    if (sfl <= 0) {
        fail_reason("%s: bad server-first base64 '%s'", mech, ans);
        goto done;
    }
    /* r=<nonce>,s=<salt>,i=<iter> */
    char nonce[512] = "", salt64[256] = "";
    long iter = 0;
    for (char *tok = strtok((char *)sf, ","); tok; tok = strtok(NULL, ",")) {
        if (strncmp(tok, "r=", 2) == 0)
            snprintf(nonce, sizeof nonce, "%s", tok + 2);
        else if (strncmp(tok, "s=", 2) == 0)
            snprintf(salt64, sizeof salt64, "%s", tok + 2);
        else if (strncmp(tok, "i=", 2) == 0)
            iter = strtol(tok + 2, NULL, 10);
    }
    char server_first[4096];
    b64dec(ans, (unsigned char *)server_first);
    if (strncmp(nonce, cnonce, strlen(cnonce)) != 0 || strlen(nonce) <= strlen(cnonce) || iter < 1 ||
        !salt64[0]) {
        fail_reason("%s: bad server-first '%s'", mech, server_first);
        goto done;
    }
    unsigned char salt[256];
    int saltl = b64dec(salt64, salt);
    unsigned char sp[64], ck[64], sk[64], stk[64], csig[64], ssig[64], proof[64];
    unsigned int l;
    PKCS5_PBKDF2_HMAC(pass, (int)strlen(pass), salt, saltl, (int)iter, md, (int)hlen, sp);
    HMAC(md, sp, (int)hlen, (const unsigned char *)"Client Key", 10, ck, &l);
    HMAC(md, sp, (int)hlen, (const unsigned char *)"Server Key", 10, sk, &l);
    EVP_Digest(ck, hlen, stk, &l, md, NULL);
    unsigned char cbind[256];
    size_t gl = strlen(gs2), cbl = 0;
    memcpy(cbind, gs2, gl);
    if (plus && cb_data(r, cbtype ? cbtype : "tls-exporter", cbind + gl, &cbl) < 0) {
        fail_reason("%s: no channel binding data for %s", mech, cbtype);
        goto done;
    }
    char *c64 = b64enc(cbind, gl + cbl);
    char cfwp[1200];
    snprintf(cfwp, sizeof cfwp, "c=%s,r=%s", c64, nonce);
    free(c64);
    char am[6000];
    snprintf(am, sizeof am, "%s,%s,%s", cfb, server_first, cfwp);
    HMAC(md, stk, (int)hlen, (unsigned char *)am, strlen(am), csig, &l);
    HMAC(md, sk, (int)hlen, (unsigned char *)am, strlen(am), ssig, &l);
    for (size_t i = 0; i < hlen; i++)
        proof[i] = ck[i] ^ csig[i];
    char *p64 = b64enc(proof, hlen);
    char final[1500];
    snprintf(final, sizeof final, "%s,p=%s", cfwp, p64);
    free(p64);
    b = b64enc((unsigned char *)final, strlen(final));
    raw_sendf(r, "<response xmlns='" NS_SASL "'>%s</response>", b);
    free(b);
    a = sasl_answer(r, ans, sizeof ans, 5000);
    if (a == 0) {
        snprintf(cond, condlen, "%s", ans);
        rc = 0;
        goto done;
    }
    if (a != 2) {
        fail_reason("%s: no success: %s", mech, raw_tail(r, 300));
        goto done;
    }
    unsigned char v[sizeof ans];        /* decoding never grows */
    int vl = b64dec(ans, v);
    char *want = b64enc(ssig, hlen);
    snprintf(r->server_sig, sizeof r->server_sig, "%.200s", vl > 2 ? (char *)v + 2 : "");
    if (vl < 2 || strncmp((char *)v, "v=", 2) != 0 || strcmp((char *)v + 2, want) != 0) {
        fail_reason("%s: server signature does not verify: got '%s', want 'v=%s'", mech, vl > 0 ? (char *)v : "",
                    want);
        free(want);
        goto done;
    }
    free(want);
    rc = 1;
done:
    OPENSSL_cleanse(sp, sizeof sp);
    free(cnonce);
    return rc;
}

int
raw_restart(struct raw *r)
{
    return raw_open_stream(r, r->domain);
}

int
raw_bind(struct raw *r, const char *resource)
{
    static unsigned n;
    char id[32];
    snprintf(id, sizeof id, "bind%u", ++n);
    if (resource && *resource)
        raw_sendf(r, "<iq type='set' id='%s'><bind xmlns='" NS_BIND "'><resource>%s</resource></bind></iq>", id,
                  resource);
    else
        raw_sendf(r, "<iq type='set' id='%s'><bind xmlns='" NS_BIND "'/></iq>", id);
    if (!raw_extract(r, "<jid>", "</jid>", r->jid, sizeof r->jid, 5000)) {
        fail_reason("bind failed: %s", raw_tail(r, 300));
        return 0;
    }
    return 1;
}

int
raw_login(struct raw *r, int port, const char *src_ip, const char *user, const char *domain, const char *pass,
          const char *resource)
{
    if (!raw_connect_tls(r, port, 0, src_ip, domain))
        return 0;
    char cond[64];
    int a = raw_auth(r, "SCRAM-SHA-256", NULL, user, pass, cond, sizeof cond);
    if (a != 1) {
        if (a == 0)
            fail_reason("login of %s@%s failed: %s", user, domain, cond);
        return 0;
    }
    if (!raw_restart(r))
        return 0;
    return raw_bind(r, resource);
}

/* ---- libstrophe client -------------------------------------------------------------------- */

static xmpp_ctx_t *gctx;

void
sc_global_init(void)
{
    xmpp_initialize();
    const char *dbg = getenv("ITEST_STROPHE_DEBUG");
    if (dbg && *dbg) {
        gctx = xmpp_ctx_new(NULL, xmpp_get_default_logger(XMPP_LEVEL_DEBUG));
    } else {
        gctx = xmpp_ctx_new(NULL, NULL);
    }
    if (gctx == NULL)
        abort();
}

void
sc_global_fini(void)
{
    if (gctx)
        xmpp_ctx_free(gctx);
    gctx = NULL;
    xmpp_shutdown();
    if (raw_ssl_ctx)
        SSL_CTX_free(raw_ssl_ctx);
    raw_ssl_ctx = NULL;
}

xmpp_ctx_t *sc_ctx(void) { return gctx; }

void
sc_pump(int ms)
{
    uint64_t deadline = now_ms() + (uint64_t)ms;
    do {
        int64_t left = (int64_t)(deadline - now_ms());
        xmpp_run_once(gctx, left > 20 ? 20 : (left > 0 ? (unsigned long)left : 1));
    } while ((int64_t)(deadline - now_ms()) > 0);
}

static int
stanza_handler(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    (void)conn;
    struct sc *c = ud;
    const char *name = xmpp_stanza_get_name(st), *type = xmpp_stanza_get_type(st);
    if (c->auto_pong && name && strcmp(name, "iq") == 0 && type && strcmp(type, "get") == 0 &&
        xmpp_stanza_get_child_by_ns(st, NS_PING)) {
        const char *id = xmpp_stanza_get_id(st), *from = xmpp_stanza_get_from(st);
        xmpp_stanza_t *res = xmpp_iq_new(gctx, "result", id ? id : "");
        if (from)
            xmpp_stanza_set_to(res, from);
        xmpp_send(c->conn, res);
        xmpp_stanza_release(res);
        return 1;
    }
    if (c->ngot < SC_MAX_STANZAS)
        c->got[c->ngot++] = xmpp_stanza_clone(st);
    return 1;
}

static void
conn_handler(xmpp_conn_t *conn, xmpp_conn_event_t ev, int error, xmpp_stream_error_t *se, void *ud)
{
    struct sc *c = ud;
    (void)error;
    if (ev == XMPP_CONN_CONNECT) {
        c->state = 1;
        c->ever_connected = 1;
        const char *j = xmpp_conn_get_bound_jid(conn);
        snprintf(c->jid, sizeof c->jid, "%s", j ? j : "");
        xmpp_handler_add(conn, stanza_handler, NULL, NULL, NULL, c);
        vlog("sc %p: connected as %s", (void *)c, c->jid);
    } else if (ev == XMPP_CONN_DISCONNECT || ev == XMPP_CONN_FAIL) {
        c->state = 2;
        if (se) {
            c->stream_error = (int)se->type;
            snprintf(c->stream_error_text, sizeof c->stream_error_text, "%s", se->text ? se->text : "");
        }
        vlog("sc %p: disconnected (error %d, stream error %d)", (void *)c, error, se ? (int)se->type : -1);
    }
}

int
sc_start(struct sc *c, const char *jid, const char *pass, int port, int direct_tls)
{
    memset(c, 0, sizeof *c);
    c->stream_error = -1;
    c->auto_pong = 1;
    c->conn = xmpp_conn_new(gctx);
    if (c->conn == NULL)
        abort();
    long flags = XMPP_CONN_FLAG_TRUST_TLS | (direct_tls ? XMPP_CONN_FLAG_LEGACY_SSL : XMPP_CONN_FLAG_MANDATORY_TLS);
    xmpp_conn_set_flags(c->conn, flags);
    xmpp_conn_set_jid(c->conn, jid);
    xmpp_conn_set_pass(c->conn, pass);
    if (xmpp_connect_client(c->conn, "127.0.0.1", (unsigned short)port, conn_handler, c) != XMPP_EOK) {
        fail_reason("xmpp_connect_client %s failed", jid);
        c->state = 2;
        return -1;
    }
    return 0;
}

int
sc_wait_connected(struct sc *c, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    while (c->state == 0 && (int64_t)(deadline - now_ms()) > 0)
        xmpp_run_once(gctx, 20);
    return c->state == 1;
}

int
sc_login(struct sc *c, const char *jid, const char *pass, int port)
{
    if (sc_start(c, jid, pass, port, 0) < 0)
        return 0;
    if (!sc_wait_connected(c, 5000)) {
        fail_reason("libstrophe login of %s failed (state %d, stream error %d)", jid, c->state, c->stream_error);
        return 0;
    }
    return 1;
}

int
sc_wait_ended(struct sc *c, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    while (c->state != 2 && (int64_t)(deadline - now_ms()) > 0)
        xmpp_run_once(gctx, 20);
    return c->state == 2;
}

void
sc_close(struct sc *c)
{
    if (c->conn == NULL)
        return;
    if (c->state != 2) {
        xmpp_disconnect(c->conn);
        sc_wait_ended(c, 3000);
    }
    for (size_t i = 0; i < c->ngot; i++)
        xmpp_stanza_release(c->got[i]);
    c->ngot = 0;
    xmpp_conn_release(c->conn);
    c->conn = NULL;
}

int
sc_send_raw(struct sc *c, const char *xml)
{
    if (c->state != 1)
        return -1;
    vlog("sc %p >> %.300s", (void *)c, xml);
    xmpp_send_raw(c->conn, xml, strlen(xml));
    return 0;
}

void
sc_send(struct sc *c, xmpp_stanza_t *st)
{
    if (c->state == 1)
        xmpp_send(c->conn, st);
}

xmpp_stanza_t *
sc_peek(struct sc *c, sc_pred pred, const void *arg)
{
    for (size_t i = 0; i < c->ngot; i++)
        if (pred(c->got[i], arg))
            return c->got[i];
    return NULL;
}

xmpp_stanza_t *
sc_wait(struct sc *c, sc_pred pred, const void *arg, int timeout_ms)
{
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        for (size_t i = 0; i < c->ngot; i++)
            if (pred(c->got[i], arg)) {
                xmpp_stanza_t *st = c->got[i];
                memmove(c->got + i, c->got + i + 1, (c->ngot - i - 1) * sizeof *c->got);
                c->ngot--;
                return st;
            }
        if ((int64_t)(deadline - now_ms()) <= 0 || c->state == 2)
            return NULL;
        xmpp_run_once(gctx, 20);
    }
}

int
pred_id(xmpp_stanza_t *st, const void *id)
{
    const char *sid = xmpp_stanza_get_id(st);
    return sid && strcmp(sid, (const char *)id) == 0;
}

int
pred_body(xmpp_stanza_t *st, const void *body)
{
    const char *name = xmpp_stanza_get_name(st);
    if (name == NULL || strcmp(name, "message") != 0)
        return 0;
    xmpp_stanza_t *b = xmpp_stanza_get_child_by_name(st, "body");
    if (b == NULL)
        return 0;
    char *t = xmpp_stanza_get_text(b);
    int ok = t && strcmp(t, (const char *)body) == 0;
    if (t)
        xmpp_free(gctx, t);
    return ok;
}

int
pred_any_message(xmpp_stanza_t *st, const void *unused)
{
    (void)unused;
    const char *name = xmpp_stanza_get_name(st);
    return name && strcmp(name, "message") == 0;
}

xmpp_stanza_t *
sc_wait_id(struct sc *c, const char *id, int timeout_ms)
{
    return sc_wait(c, pred_id, id, timeout_ms);
}

int
sc_sync(struct sc *c)
{
    static unsigned n;
    char id[32], xml[400];
    snprintf(id, sizeof id, "sync%u", ++n);
    const char *at = strchr(c->jid, '@');
    char domain[256];
    snprintf(domain, sizeof domain, "%s", at ? at + 1 : "localhost");
    char *slash = strchr(domain, '/');
    if (slash)
        *slash = '\0';
    snprintf(xml, sizeof xml, "<iq type='get' id='%s' to='%s'><ping xmlns='" NS_PING "'/></iq>", id, domain);
    if (sc_send_raw(c, xml) < 0)
        return 0;
    xmpp_stanza_t *r = sc_wait_id(c, id, 5000);
    if (r == NULL)
        return 0;
    const char *type = xmpp_stanza_get_type(r);
    int ok = type && strcmp(type, "result") == 0;
    xmpp_stanza_release(r);
    return ok;
}

const char *
stanza_str(xmpp_stanza_t *st)
{
    static char out[700];
    char *buf = NULL;
    size_t len = 0;
    if (st == NULL)
        return "(none)";
    if (xmpp_stanza_to_text(st, &buf, &len) != XMPP_EOK || buf == NULL)
        return "(unprintable)";
    snprintf(out, sizeof out, "%.*s%s", (int)(len > 600 ? 600 : len), buf, len > 600 ? "..." : "");
    xmpp_free(gctx, buf);
    return out;
}

const char *
stanza_error_cond(xmpp_stanza_t *st, const char **type)
{
    if (type)
        *type = NULL;
    const char *t = xmpp_stanza_get_type(st);
    if (t == NULL || strcmp(t, "error") != 0)
        return NULL;
    xmpp_stanza_t *e = xmpp_stanza_get_child_by_name(st, "error");
    if (e == NULL)
        return NULL;
    if (type)
        *type = xmpp_stanza_get_type(e);
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(e); c; c = xmpp_stanza_get_next(c)) {
        const char *ns = xmpp_stanza_get_ns(c), *name = xmpp_stanza_get_name(c);
        if (xmpp_stanza_is_tag(c) && ns && strcmp(ns, NS_STANZAS) == 0 && name && strcmp(name, "text") != 0)
            return name;
    }
    return NULL;
}

/* ---- witnesses ---------------------------------------------------------------------------
 * Two sessions connected before the bad input (shared by the bad-input tests,
 * made on first use and again if a test broke them), and a stored user: after
 * each bad input the two still exchange a message and the user still logs in. */
struct witness {
    struct sc a, b;
    int up;
    int port;                   /* of the server they are logged in to */
};
static struct witness W;

int
witness_up(const struct srv *s)
{
    if (W.up && W.port == s->port_starttls && W.a.state == 1 && W.b.state == 1)
        return 1;
    if (W.up) {
        sc_close(&W.a);
        sc_close(&W.b);
    }
    W.up = 1;
    W.port = s->port_starttls;
    if (!sc_login(&W.a, "w1@localhost/witness", "pw-w1", s->port_starttls) ||
        !sc_login(&W.b, "w2@localhost/witness", "pw-w2", s->port_starttls)) {
        fail_reason("witness login failed");
        return 0;
    }
    return 1;
}

int
witness_check(const struct srv *s, const char *tag)
{
    static unsigned n;
    char xml[400], id[64];
    snprintf(id, sizeof id, "wit%u", ++n);
    if (!W.up || W.port != s->port_starttls) {
        fail_reason("witness_check() without witness_up() on this server");
        return 0;
    }
    if (W.a.state != 1 || W.b.state != 1) {
        fail_reason("a session connected before the bad input was closed (%d/%d)", W.a.state, W.b.state);
        return 0;
    }
    snprintf(xml, sizeof xml, "<message to='w2@localhost/witness' type='chat' id='%s'><body>still there?</body></message>",
             id);
    sc_send_raw(&W.a, xml);
    xmpp_stanza_t *m = sc_wait_id(&W.b, id, 5000);
    if (m == NULL) {
        fail_reason("after the bad input, two connected sessions no longer exchange messages");
        return 0;
    }
    xmpp_stanza_release(m);
    if (sc_peek(&W.b, pred_id, "bad11")) {
        fail_reason("the bad stanza was delivered");
        return 0;
    }
    struct raw r;
    char res[64];
    snprintf(res, sizeof res, "after-%s", tag);
    int ok = raw_login(&r, s->port_starttls, NULL, "w3", "localhost", "pw-w3", res);
    raw_close(&r);
    if (!ok) {
        fail_reason("after the bad input, a stored user can no longer log in");
        return 0;
    }
    return 1;
}

void
witness_down(void)
{
    if (W.up) {
        sc_close(&W.a);
        sc_close(&W.b);
    }
    W.up = 0;
}


/* ---- more for the store and data-folder tests (t_store.c) ------------------------------------ */

int
free_port(void)
{
    int p;
    return free_ports(&p, 1) < 0 ? 0 : p;
}

int
port_open(int port)
{
    return port_accepts(port);
}

int
srv_stop_keep(struct srv *s)
{
    int had = getenv("ITEST_KEEP") != NULL;
    if (!had && setenv("ITEST_KEEP", "1", 1) < 0)
        return -1;
    int rc = srv_stop(s);
    if (!had)
        unsetenv("ITEST_KEEP");
    return rc;
}

/* fork + exec argv in cwd (NULL: here) with stdin_data on stdin, stdout and
 * stderr into out; wait up to timeout_ms. The wait status, or -1 (still
 * running at the deadline: killed; or not started). */
static int
run_capture(const char *path, const char *const *argv, const char *cwd, const char *stdin_data, char *out,
            size_t outlen, int timeout_ms)
{
    int in[2], o[2];
    if (out && outlen)
        out[0] = '\0';
    if (pipe(in) < 0)
        return -1;
    if (pipe(o) < 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(in[0]);
        close(in[1]);
        close(o[0]);
        close(o[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(o[1], 1);
        dup2(o[1], 2);
        close(in[0]);
        close(in[1]);
        close(o[0]);
        close(o[1]);
        if (cwd && chdir(cwd) < 0) {
            fprintf(stderr, "chdir %s: %s\n", cwd, strerror(errno));
            _exit(126);
        }
        execv(path, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", path, strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(o[1]);
    if (stdin_data) {
        size_t left = strlen(stdin_data);
        const char *p = stdin_data;
        while (left > 0) {
            ssize_t w = write(in[1], p, left);
            if (w <= 0)
                break;
            p += w;
            left -= (size_t)w;
        }
    }
    close(in[1]);
    size_t got = 0;
    int killed = 0;
    uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int64_t left = (int64_t)(deadline - now_ms());
        if (left <= 0) {
            kill(pid, SIGKILL);
            killed = 1;
            break;
        }
        struct pollfd pfd = { o[0], POLLIN, 0 };
        int pr = poll(&pfd, 1, (int)left);
        if (pr <= 0)
            continue;
        char tmp[4096];
        ssize_t r = read(o[0], tmp, sizeof tmp);
        if (r <= 0)
            break;
        if (out && got + 1 < outlen) {
            size_t take = (size_t)r < outlen - 1 - got ? (size_t)r : outlen - 1 - got;
            memcpy(out + got, tmp, take);
            got += take;
        }
    }
    if (out && outlen)
        out[got] = '\0';
    close(o[0]);
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    vlog("%s %s -> %s %d: %s", argv[0], argv[1] ? argv[1] : "", killed ? "killed" : "status", st, out ? out : "");
    return killed ? -1 : st;
}

int
petreld_run(const struct srv *s, const char *conf, int timeout_ms, char *out, size_t outlen)
{
    /* under a name without "petrel" in it, like srv_start's server */
    char link[400];
    snprintf(link, sizeof link, "%s/itest-server", s->dir);
    const char *path = access(link, X_OK) == 0 ? link : s->exe;
    const char *argv[] = { "itest-server-once", "-c", conf ? conf : s->conf, NULL };
    return run_capture(path, argv, NULL, NULL, out, outlen, timeout_ms);
}

int
ctl_run(const char *cwd, const char *conf, const char *stdin_data, char *out, size_t outlen, const char *const *args)
{
    char rel[1200], path[4096];
    snprintf(rel, sizeof rel, "%s/src/petrelctl", builddir());
    if (realpath(rel, path) == NULL)
        return -1;
    const char *argv[32];
    int n = 0;
    argv[n++] = path;
    argv[n++] = "-c";
    argv[n++] = conf;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int st = run_capture(path, argv, cwd, stdin_data, out, outlen, 15000);
    return st < 0 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- a server with a configuration of the test's own (t_services.c) ------------------------ */

int
srv_start_body(struct srv *s, const char *users, const char *body)
{
    memset(s, 0, sizeof *s);
    s->pid = -1;
    snprintf(s->builddir, sizeof s->builddir, "%s", builddir());
    char rel[1200];
    snprintf(rel, sizeof rel, "%s/src/petreld", s->builddir);
    if (realpath(rel, s->exe) == NULL)
        snprintf(s->exe, sizeof s->exe, "%s", rel);
    if (access(s->exe, X_OK) != 0) {
        fail_reason("%s is missing (build it: make src/petreld src/petrelctl; or set top_builddir)", s->exe);
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0' || strlen(tmp) > 60)
        tmp = "/tmp";
    snprintf(s->dir, sizeof s->dir, "%s/pt-itest.XXXXXX", tmp);
    if (mkdtemp(s->dir) == NULL) {
        fail_reason("mkdtemp %s: %s", s->dir, strerror(errno));
        return -1;
    }
    snprintf(s->conf, sizeof s->conf, "%s/server.conf", s->dir);
    snprintf(s->log, sizeof s->log, "%s/petreld.log", s->dir);
    int ports[2];
    if (free_ports(ports, 2) < 0) {
        fail_reason("cannot find free ports");
        return -1;
    }
    s->port_starttls = ports[0];
    s->port_tls = ports[1];
    FILE *f = fopen(s->conf, "w");
    if (f == NULL) {
        fail_reason("cannot write %s", s->conf);
        return -1;
    }
    fprintf(f,
            "# written by tests/integration/harness.c (srv_start_body)\n"
            "data_dir = \"%s\"\n"
            "log_level = \"debug\"\n"
            "listen \"127.0.0.1:%d\" { type = \"c2s\" tls = \"starttls\" }\n"
            "listen \"127.0.0.1:%d\" { type = \"c2s\" tls = \"direct\" }\n"
            "%s\n",
            s->dir, s->port_starttls, s->port_tls, body);
    fclose(f);
    if (users && *users) {
        char out[4096];
        const char *args[] = { "--create-store", "adduser", "--batch", NULL };
        int rc = srv_ctl(s, users, out, sizeof out, args);
        if (rc != 0) {
            fail_reason("petrelctl adduser --batch failed (%d): %s", rc, out);
            return -1;
        }
    }
    return srv_spawn(s);
}
