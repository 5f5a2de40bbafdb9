/* test_tls.c — unit tests for the self-signed certificate of src/tls.c (cmocka).
 *
 * A full disk is simulated with a small RLIMIT_FSIZE and SIGXFSZ ignored:
 * a write past the limit then fails with EFBIG, as one on a full disk fails
 * with ENOSPC. Nothing is printed while the limit is on (the test's own
 * output may go to a log file).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "tls.h"

struct fx {
    char tmp[128];
    char cert[256];
    char key[256];
};

static int
setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tu_mkdtemp(f->tmp, sizeof f->tmp, "tls");
    snprintf(f->cert, sizeof f->cert, "%s/localhost.crt", f->tmp);
    snprintf(f->key, sizeof f->key, "%s/localhost.key", f->tmp);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    tu_rmtree(f->tmp);
    free(f);
    return 0;
}

/* Names in dir (without . and ..), space-separated into buf; returns how many. */
static int
list_dir(const char *dir, char *buf, size_t len)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    buf[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        size_t used = strlen(buf);
        snprintf(buf + used, len - used, "%s%s", used ? " " : "", e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static void
assert_dir_holds(const char *dir, int want)
{
    char names[1024];
    int n = list_dir(dir, names, sizeof names);
    if (n != want)
        fail_msg("%s: expected %d files, found %d: %s", dir, want, n, names);
}

static off_t
file_size(const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0)
        fail_msg("stat %s: %s", path, strerror(errno));
    return st.st_size;
}

/* Contents of a (small) file, malloc'ed and NUL-terminated. */
static char *
slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    char *buf = malloc(8192);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 8191, fp);
    assert_int_equal(ferror(fp), 0);
    fclose(fp);
    buf[n] = '\0';
    *len = n;
    return buf;
}

static void
write_file(const char *path, const char *data)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    size_t n = strlen(data);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static void
assert_loads(const struct fx *f)
{
    char err[512] = "";
    SSL_CTX *ctx = tls_ctx_new(f->cert, f->key, err, sizeof err);
    if (ctx == NULL)
        fail_msg("tls_ctx_new: %s", err);
    SSL_CTX_free(ctx);
}

static struct rlimit saved_limit;

/* Writes past `bytes` in any file now fail with EFBIG. */
static void
disk_full(rlim_t bytes)
{
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved_limit), 0);
    assert_true(saved_limit.rlim_max == RLIM_INFINITY || saved_limit.rlim_max > bytes);
    assert_true(signal(SIGXFSZ, SIG_IGN) != SIG_ERR);
    struct rlimit lim = { bytes, saved_limit.rlim_max };
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
}

static void
disk_freed(void)
{
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved_limit), 0);
}

/* The precondition of the tests: the limit really makes writes fail. */
static void
test_limit_works(void **state)
{
    struct fx *f = *state;
    char path[300];
    snprintf(path, sizeof path, "%s/probe", f->tmp);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    disk_full(16);
    size_t n = fwrite("0123456789abcdef0123456789abcdef", 1, 32, fp);
    int rc = fflush(fp);
    int e = errno;
    disk_freed();
    fclose(fp);
    (void)n;
    assert_int_equal(rc, EOF);
    assert_int_equal(e, EFBIG);
    assert_true(file_size(path) <= 16);
    unlink(path);
}

/* Not even the key fits: a failure naming the key and the errno text, nothing left. */
static void
test_full_disk_key(void **state)
{
    struct fx *f = *state;
    char err[512] = "";
    disk_full(16);
    int rc = tls_make_selfsigned("localhost", f->cert, f->key, err, sizeof err);
    disk_freed();
    assert_int_equal(rc, -1);
    if (strstr(err, f->key) == NULL || strstr(err, strerror(EFBIG)) == NULL)
        fail_msg("message does not name the key and the error: \"%s\"", err);
    assert_dir_holds(f->tmp, 0);

    /* space again: made, and usable */
    err[0] = '\0';
    rc = tls_make_selfsigned("localhost", f->cert, f->key, err, sizeof err);
    if (rc != 0)
        fail_msg("tls_make_selfsigned after the disk was freed: %s", err);
    assert_dir_holds(f->tmp, 2);
    assert_loads(f);
    struct stat st;
    assert_int_equal(stat(f->key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

/* The key fits but the certificate does not: the key is not left alone either. */
static void
test_full_disk_cert(void **state)
{
    struct fx *f = *state;
    char err[512] = "";
    /* a P-256 key in PEM is about 240 bytes, the certificate about 600 */
    disk_full(400);
    int rc = tls_make_selfsigned("localhost", f->cert, f->key, err, sizeof err);
    disk_freed();
    assert_int_equal(rc, -1);
    if (strstr(err, f->cert) == NULL || strstr(err, strerror(EFBIG)) == NULL)
        fail_msg("message does not name the certificate and the error: \"%s\"", err);
    assert_dir_holds(f->tmp, 0);

    rc = tls_make_selfsigned("localhost", f->cert, f->key, err, sizeof err);
    if (rc != 0)
        fail_msg("tls_make_selfsigned after the disk was freed: %s", err);
    assert_loads(f);
    /* the sizes the limit above relies on */
    assert_true(file_size(f->key) < 400);
    assert_true(file_size(f->cert) > 400);
}

/* A usable pair is kept as it is. */
static void
test_pair_kept(void **state)
{
    struct fx *f = *state;
    char err[512] = "", note[600] = "x";
    assert_int_equal(tls_selfsigned_ensure("localhost", f->cert, f->key, note, sizeof note, err, sizeof err), 1);
    assert_string_equal(note, ""); /* missing, not broken */
    size_t clen, klen;
    char *c1 = slurp(f->cert, &clen), *k1 = slurp(f->key, &klen);
    assert_int_equal(tls_selfsigned_ensure("localhost", f->cert, f->key, note, sizeof note, err, sizeof err), 0);
    assert_int_equal(tls_make_selfsigned("localhost", f->cert, f->key, err, sizeof err), 0);
    size_t clen2, klen2;
    char *c2 = slurp(f->cert, &clen2), *k2 = slurp(f->key, &klen2);
    assert_int_equal(clen, clen2);
    assert_int_equal(klen, klen2);
    assert_memory_equal(c1, c2, clen);
    assert_memory_equal(k1, k2, klen);
    free(c1);
    free(c2);
    free(k1);
    free(k2);
    assert_dir_holds(f->tmp, 2);
}

/* 0-byte files left by an older version on a full disk are made again. */
static void
test_empty_pair_replaced(void **state)
{
    struct fx *f = *state;
    write_file(f->cert, "");
    write_file(f->key, "");
    char err[512] = "", note[600] = "";
    int rc = tls_selfsigned_ensure("localhost", f->cert, f->key, note, sizeof note, err, sizeof err);
    if (rc != 1)
        fail_msg("tls_selfsigned_ensure: %d (%s)", rc, err);
    char want[600];
    snprintf(want, sizeof want, "%s is empty, %s is empty", f->cert, f->key);
    assert_string_equal(note, want);
    assert_loads(f);
    assert_dir_holds(f->tmp, 2);
}

/* Garbage or a lone file: made again too. */
static void
test_broken_pair_replaced(void **state)
{
    struct fx *f = *state;
    char err[512] = "", note[600] = "";
    write_file(f->cert, "-----BEGIN CERTIFICATE-----\nMIIB\n");
    write_file(f->key, "");
    assert_int_equal(tls_selfsigned_ensure("localhost", f->cert, f->key, note, sizeof note, err, sizeof err), 1);
    char want[600];
    snprintf(want, sizeof want, "%s is not a PEM certificate, %s is empty", f->cert, f->key);
    assert_string_equal(note, want);
    assert_loads(f);

    /* a good certificate whose key is gone */
    assert_int_equal(unlink(f->key), 0);
    assert_int_equal(tls_selfsigned_ensure("localhost", f->cert, f->key, note, sizeof note, err, sizeof err), 1);
    assert_string_equal(note, "");
    assert_loads(f);

    /* a key that is not PEM */
    write_file(f->key, "not a key\n");
    assert_int_equal(tls_selfsigned_ensure("localhost", f->cert, f->key, note, sizeof note, err, sizeof err), 1);
    snprintf(want, sizeof want, "%s is not a PEM private key", f->key);
    assert_string_equal(note, want);
    assert_loads(f);
    assert_dir_holds(f->tmp, 2);
}

/* Repairing on a disk that is still full fails, keeps the old files as
 * they were and leaves no temporary file; once there is space it works. */
static void
test_replace_on_full_disk(void **state)
{
    struct fx *f = *state;
    write_file(f->cert, "");
    write_file(f->key, "");
    char err[512] = "", note[600] = "";
    disk_full(16);
    int rc = tls_selfsigned_ensure("localhost", f->cert, f->key, note, sizeof note, err, sizeof err);
    disk_freed();
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err, strerror(EFBIG)));
    assert_dir_holds(f->tmp, 2);
    assert_int_equal(file_size(f->cert), 0);
    assert_int_equal(file_size(f->key), 0);

    rc = tls_selfsigned_ensure("localhost", f->cert, f->key, note, sizeof note, err, sizeof err);
    if (rc != 1)
        fail_msg("tls_selfsigned_ensure: %d (%s)", rc, err);
    assert_loads(f);
    assert_dir_holds(f->tmp, 2);
}

/* A folder that is not there: an error with the errno text, not a crash. */
static void
test_no_folder(void **state)
{
    struct fx *f = *state;
    char cert[300], key[300], err[512] = "";
    snprintf(cert, sizeof cert, "%s/nope/x.crt", f->tmp);
    snprintf(key, sizeof key, "%s/nope/x.key", f->tmp);
    assert_int_equal(tls_make_selfsigned("x", cert, key, err, sizeof err), -1);
    assert_non_null(strstr(err, strerror(ENOENT)));
    assert_dir_holds(f->tmp, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_limit_works, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_disk_cert, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pair_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_pair_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_pair_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_on_full_disk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_folder, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
