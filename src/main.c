/* main.c — petreld: read the config, set everything up (fatal errors only
 * here), then run the loop. */
#include "config.h"
#include "conf.h"
#include "datadir.h"
#include "log.h"
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef PT_DEFAULT_CONFIG
#define PT_DEFAULT_CONFIG PT_SYSCONFDIR "/petrel/petrel.conf"
#endif

static void
usage(FILE *f)
{
    fprintf(f, "usage: petreld [-d] [-c FILE] [--check-config] [--version]\n"
               "  -c, --config FILE   configuration file (default %s)\n"
               "  -d, --daemon        run in the background, log to syslog, write pid_file\n"
               "      --check-config  validate the configuration and exit\n"
               "  -v, --version       print the version and exit\n",
            PT_DEFAULT_CONFIG);
}

static void
write_pid_file(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        fatal("pid file %s", path);
    dprintf(fd, "%ld\n", (long)getpid());
    close(fd);
}

int
main(int argc, char **argv)
{
    const char *config = PT_DEFAULT_CONFIG;
    int daemonize = 0, check = 0;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "daemon", no_argument, NULL, 'd' },
        { "check-config", no_argument, NULL, 'C' },
        { "version", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:dvh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c': config = optarg; break;
        case 'd': daemonize = 1; break;
        case 'C': check = 1; break;
        case 'v': printf("petreld %s\n", PACKAGE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    struct conf *conf = conf_load(config, err, sizeof err);
    if (conf == NULL) {
        fprintf(stderr, "petreld: %s\n", err);
        return 1;
    }
    if (check) {
        printf("%s: configuration is valid (%zu host%s, %zu listener%s)\n", config, conf->nhosts,
               conf->nhosts == 1 ? "" : "s", conf->nlisten, conf->nlisten == 1 ? "" : "s");
        conf_free(&conf);
        return 0;
    }
    if (daemonize && conf->pid_file == NULL) {
        fprintf(stderr, "petreld: -d needs pid_file in %s\n", config);
        conf_free(&conf);
        return 1;
    }
    /* one petreld per data folder; before daemon() so that a refusal is seen,
     * and before the pid file, which a second petreld must not overwrite */
    if (datadir_lock(conf->data_dir, err, sizeof err) < 0) {
        fprintf(stderr, "petreld: %s\n", err);
        conf_free(&conf);
        return 1;
    }
    if (daemonize) {
        if (daemon(1, 0) < 0) {
            perror("petreld: daemon");
            return 1;
        }
        log_init(conf->log_level, 1, "petreld");
        (void)datadir_lock_setpid();     /* a failure is logged; the lock holds anyway */
        write_pid_file(conf->pid_file);
    } else {
        log_init(conf->log_level, 0, "petreld");
        if (conf->pid_file)
            write_pid_file(conf->pid_file);
    }
    static struct server srv;
    server_init(&srv, conf);
    server_run(&srv);
    server_fini(&srv);
    if (conf->pid_file)
        unlink(conf->pid_file);
    datadir_unlock();
    conf_free(&conf);
    return 0;
}
