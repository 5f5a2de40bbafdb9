/* petrelctl — host-side administration. Works whether or not petreld runs:
 * accounts are written to the store directly (LMDB allows several processes),
 * live sessions are asked for over the control socket. It never makes a store
 * unless asked (--create-store), and never takes petreld's data-folder lock. */
#include "config.h"
#include "accounts.h"
#include "conf.h"
#include "control.h"
#include "jid.h"
#include "log.h"
#include "petrel.h"
#include "store.h"

#include <errno.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#ifndef PT_DEFAULT_CONFIG
#define PT_DEFAULT_CONFIG PT_SYSCONFDIR "/petrel/petrel.conf"
#endif

static struct conf *conf;
static struct store *store;
static int create_store;                /* --create-store */

static void
usage(FILE *f)
{
    fprintf(f, "usage: petrelctl [-c FILE] [--create-store] COMMAND [ARGS]\n"
               "  -c, --config FILE    configuration file (default %s)\n"
               "      --create-store   make the store if it does not exist yet (before petreld's first start)\n"
               "  adduser JID          create an account; the password is read from stdin\n"
               "  adduser --batch      create accounts from lines \"JID PASSWORD\" on stdin\n"
               "  deluser JID          delete an account and end its sessions\n"
               "  passwd JID           set a new password (read from stdin)\n"
               "  users DOMAIN         list the accounts of a virtual host\n"
               "  sessions             list the sessions of the running server\n",
            PT_DEFAULT_CONFIG);
}

/* The store petreld uses. It is never made here unless asked (--create-store):
 * a store that is not there means a wrong data_dir or a server never started,
 * and accounts written into a new store elsewhere would be lost to it. */
static int
open_store(void)
{
    char path[4200], err[1024];
    snprintf(path, sizeof path, "%s/store", conf->data_dir);
    int rc;
    if (create_store) {
        if (mkdir(conf->data_dir, 0700) < 0 && errno != EEXIST) {
            fprintf(stderr, "petrelctl: cannot create %s: %s\n", conf->data_dir, strerror(errno));
            return -1;
        }
        rc = store_open(&store, path, conf->store_map_size, err, sizeof err);
    } else {
        rc = store_open_existing(&store, path, conf->store_map_size, err, sizeof err);
    }
    if (rc == PT_ENOTFOUND) {
        fprintf(stderr, "petrelctl: there is no store in %s (data_dir of %s): petreld has not been started "
                "with this configuration yet; nothing was changed (--create-store makes a new, empty store)\n",
                path, conf->path);
        return -1;
    }
    if (rc < 0) {
        fprintf(stderr, "petrelctl: %s\n", err);
        return -1;
    }
    return 0;
}

/* Send one command to the running server. Returns 0 with its answer on out, 1 if not running. */
static int
control(const char *cmd, FILE *out)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    if (control_path(conf->data_dir, sun.sun_path, sizeof sun.sun_path) < 0)
        return 1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 1;
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        close(fd);
        return 1;
    }
    size_t len = strlen(cmd);
    if (write(fd, cmd, len) != (ssize_t)len || write(fd, "\n", 1) != 1) {
        close(fd);
        return 1;
    }
    char buf[4096];
    ssize_t n;
    int rc = 1;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if (out)
            fwrite(buf, 1, (size_t)n, out);
        rc = 0;
    }
    close(fd);
    return rc;
}

static int
check_jid(const char *arg, struct jid *j)
{
    if (jid_parse(j, arg, strlen(arg)) < 0 || j->node[0] == '\0' || j->resource) {
        fprintf(stderr, "petrelctl: %s is not a bare user JID (user@domain)\n", arg);
        jid_clear(j);
        return -1;
    }
    for (size_t i = 0; i < conf->nhosts; i++)
        if (strcmp(conf->hosts[i].name, j->domain) == 0)
            return 0;
    fprintf(stderr, "petrelctl: %s is not a virtual host of %s\n", j->domain, conf->path);
    jid_clear(j);
    return -1;
}

static int
read_password(char *buf, size_t len)
{
    struct termios old, quiet;
    int tty = isatty(STDIN_FILENO);
    if (tty) {
        fprintf(stderr, "Password: ");
        tcgetattr(STDIN_FILENO, &old);
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    char *ok = fgets(buf, (int)len, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSANOW, &old);
        fprintf(stderr, "\n");
    }
    if (ok == NULL)
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] ? 0 : -1;
}

static int
set_password(const char *bare, const char *password, int replace)
{
    int rc = account_set_password(store, bare, password, conf->scram_iterations, replace);
    if (rc == 0)
        rc = store_commit(store);
    if (rc == PT_EEXIST)
        fprintf(stderr, "petrelctl: %s already exists\n", bare);
    else if (rc == PT_ENOTFOUND)
        fprintf(stderr, "petrelctl: no account %s\n", bare);
    else if (rc == PT_EINVAL)
        fprintf(stderr, "petrelctl: the password for %s is not valid (empty or not UTF-8)\n", bare);
    else if (rc < 0)
        fprintf(stderr, "petrelctl: %s: %s\n", bare, pt_strerror(rc));
    return rc;
}

static int
cmd_adduser(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--batch") == 0) {
        char line[4096];
        unsigned n = 0, bad = 0;
        while (fgets(line, sizeof line, stdin)) {
            line[strcspn(line, "\r\n")] = '\0';
            char *sp = strchr(line, ' ');
            if (line[0] == '\0' || line[0] == '#')
                continue;
            struct jid j;
            if (sp == NULL) {
                fprintf(stderr, "petrelctl: expected \"JID PASSWORD\": %s\n", line);
                bad++;
                continue;
            }
            *sp = '\0';
            if (check_jid(line, &j) < 0) {
                bad++;
                continue;
            }
            if (set_password(j.bare, sp + 1, 0) == 0)
                n++;
            else
                bad++;
            jid_clear(&j);
            OPENSSL_cleanse(line, sizeof line);
        }
        printf("%u accounts created, %u failed\n", n, bad);
        return bad ? 1 : 0;
    }
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    struct jid j;
    char pw[1024];
    if (check_jid(argv[1], &j) < 0)
        return 1;
    if (read_password(pw, sizeof pw) < 0) {
        fprintf(stderr, "petrelctl: no password given on stdin\n");
        jid_clear(&j);
        return 1;
    }
    int rc = set_password(j.bare, pw, 0);
    OPENSSL_cleanse(pw, sizeof pw);
    if (rc == 0)
        printf("created %s\n", j.bare);
    jid_clear(&j);
    return rc == 0 ? 0 : 1;
}

static int
cmd_passwd(int argc, char **argv)
{
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    struct jid j;
    struct account a;
    char pw[1024];
    if (check_jid(argv[1], &j) < 0)
        return 1;
    /* before asking for the password; set_password keeps its creation time */
    int found = store_account_get(store, j.bare, &a) == 0;
    OPENSSL_cleanse(&a, sizeof a);
    if (!found) {
        fprintf(stderr, "petrelctl: no account %s\n", j.bare);
        jid_clear(&j);
        return 1;
    }
    if (read_password(pw, sizeof pw) < 0) {
        fprintf(stderr, "petrelctl: no password given on stdin\n");
        jid_clear(&j);
        return 1;
    }
    int rc = set_password(j.bare, pw, 1);
    if (rc == 0) {
        /* sessions logged in with the old password end */
        char cmd[2100];
        snprintf(cmd, sizeof cmd, "kick %s", j.bare);
        control(cmd, NULL);
    }
    OPENSSL_cleanse(pw, sizeof pw);
    if (rc == 0)
        printf("password changed for %s\n", j.bare);
    jid_clear(&j);
    return rc == 0 ? 0 : 1;
}

static int
cmd_deluser(int argc, char **argv)
{
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    struct jid j;
    if (check_jid(argv[1], &j) < 0)
        return 1;
    /* a running server deletes it itself, so that its modules hear of it */
    char cmd[2100], answer[4096];
    snprintf(cmd, sizeof cmd, "deluser %s", j.bare);
    FILE *mem = fmemopen(answer, sizeof answer - 1, "w");
    int sent = mem ? control(cmd, mem) : 1;
    if (mem) {
        fclose(mem);
        answer[sizeof answer - 1] = '\0';
    }
    if (sent == 0) {
        int ok = strstr(answer, "\nok\n") != NULL || strncmp(answer, "deleted", 7) == 0;
        if (ok)
            printf("deleted %s\n", j.bare);
        else
            fprintf(stderr, "petrelctl: %s: %s", j.bare, strncmp(answer, "error: ", 7) == 0 ? answer + 7 : answer);
        jid_clear(&j);
        return ok ? 0 : 1;
    }
    /* petreld is not running: the account goes, and a record that petreld
     * reads at its next start to have its modules drop the account's data
     * (schemas/deletions.md); both in one operation, or neither */
    MDB_txn *op;
    int rc = store_op_begin(store, &op);
    if (rc == 0) {
        rc = store_account_del(store, j.bare);
        if (rc == 0)
            rc = store_deletion_put(store, j.bare);
        rc = store_op_end(store, op, rc);
    }
    if (rc == 0)
        rc = store_commit(store);
    if (rc == PT_ENOTFOUND)
        fprintf(stderr, "petrelctl: no account %s\n", j.bare);
    else if (rc < 0)
        fprintf(stderr, "petrelctl: %s: %s (%s)\n", j.bare, pt_strerror(rc), store_last_error(store));
    if (rc == 0)
        printf("deleted %s (petreld is not running: its modules drop the account's data at its next start)\n",
               j.bare);
    jid_clear(&j);
    return rc == 0 ? 0 : 1;
}

static int
print_user(void *arg, const char *bare)
{
    (void)arg;
    printf("%s\n", bare);
    return 0;
}

static int
cmd_users(int argc, char **argv)
{
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    char d[1024];
    if (jid_nameprep(argv[1], d, sizeof d) < 0) {
        fprintf(stderr, "petrelctl: %s is not a domain\n", argv[1]);
        return 1;
    }
    return store_account_list(store, d, print_user, NULL) == 0 ? 0 : 1;
}

static int
cmd_sessions(void)
{
    if (control("sessions", stdout) != 0) {
        fprintf(stderr, "petrelctl: petreld is not running (no answer on the control socket in %s)\n",
                conf->data_dir);
        return 1;
    }
    return 0;
}

int
main(int argc, char **argv)
{
    const char *config = PT_DEFAULT_CONFIG;
    int ch;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "create-store", no_argument, NULL, 'S' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    while ((ch = getopt_long(argc, argv, "+c:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'S': create_store = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    log_init(LOG_LVL_WARNING, 0, "petrelctl");
    conf = conf_load(config, err, sizeof err);
    if (conf == NULL) {
        fprintf(stderr, "petrelctl: %s\n", err);
        return 1;
    }
    int rc;
    if (strcmp(argv[0], "sessions") == 0) {
        rc = cmd_sessions();
    } else {
        if (open_store() < 0) {
            conf_free(&conf);
            return 1;
        }
        if (strcmp(argv[0], "adduser") == 0)
            rc = cmd_adduser(argc, argv);
        else if (strcmp(argv[0], "deluser") == 0)
            rc = cmd_deluser(argc, argv);
        else if (strcmp(argv[0], "passwd") == 0)
            rc = cmd_passwd(argc, argv);
        else if (strcmp(argv[0], "users") == 0)
            rc = cmd_users(argc, argv);
        else {
            usage(stderr);
            rc = 2;
        }
        store_close(&store);
    }
    conf_free(&conf);
    return rc;
}
