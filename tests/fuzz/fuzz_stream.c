/* fuzz_stream.c — libFuzzer target for the XMPP stream parser (src/xml.c).
 *
 * Input: 4 control bytes, then the stream bytes.
 *   byte 0: flags
 *     bit 0  call xml_stream_release_idle() after every feed (as c2s does)
 *     bit 1  restart from the stanza callback after a stanza named "restart"
 *     bit 2  stop from the stanza callback after a stanza named "stop"
 *     bit 3  content namespace jabber:server instead of jabber:client
 *   bytes 1..3: where the stream bytes are split into feeds (scaled to the length)
 *
 * Every delivered stanza is checked (tree links, limits, namespaces), copied
 * with xml_copy, serialized, and the serialization is parsed again in a fresh
 * stream behind a header: it must give exactly one stanza that serializes to
 * the same bytes (round-trip property).
 *
 * Build with libFuzzer:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
 *         -I<dir with config.h> -Isrc src/xml.c tests/fuzz/fuzz_stream.c -lexpat -o fuzz_stream
 *   ./fuzz_stream -max_len=4096 -dict=tests/fuzz/stream.dict CORPUS_DIR tests/fuzz/corpus/stream
 * (-fno-sanitize-recover makes undefined behaviour a crash instead of a log line)
 * Replay files without libFuzzer (any C compiler):
 *   cc -DFUZZ_STANDALONE ... -o fuzz_stream_replay && ./fuzz_stream_replay FILE...
 * -DFUZZ_IGNORE_KNOWN skips two checks that bugs of an earlier src/xml.c
 * tripped (both fixed, with regression tests in tests/unit/test_xml.c):
 * -DFUZZ_IGNORE_XML_NS and -DFUZZ_IGNORE_RESUME_PREFIX. Do not use it on
 * current code. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xml.h"

#ifdef FUZZ_IGNORE_KNOWN
#define FUZZ_IGNORE_XML_NS 1          /* fixed: xml-namespace elements round-trip */
#define FUZZ_IGNORE_RESUME_PREFIX 1   /* fixed: idle release keeps the header's prefix */
#endif

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "fuzz_stream: check failed: %s (%s:%d)\n", #c,          \
                    __FILE__, __LINE__);                                           \
            abort();                                                               \
        }                                                                          \
    } while (0)

#define F_RELEASE_IDLE 1u
#define F_RESTART      2u
#define F_STOP         4u
#define F_SERVER       8u

static const struct xml_limits fuzz_limits = { 65536, 32, 64 };
static const char XML_NS_XML_URI[] = "http://www.w3.org/XML/1998/namespace";

struct fuzz {
    struct xml_stream *s;
    unsigned flags;
    const char *content_ns;
    int errors, closes, stanzas, opens;
    int dead;                     /* error, close or stop seen: no callbacks until restart */
    int released;                 /* an idle release happened on this stream */
};

/* ---- checks on a delivered tree ---------------------------------------------------- */

static int
uses_xml_ns(const struct xml_node *el)
{
    if (el->type != XML_ELEMENT)
        return 0;
    if (el->ns && strcmp(el->ns, XML_NS_XML_URI) == 0)
        return 1;
    for (const struct xml_node *c = el->children; c; c = c->next)
        if (uses_xml_ns(c))
            return 1;
    return 0;
}

static void
check_tree(const struct xml_node *el, const struct arena *a, unsigned depth, const char *content_ns)
{
    CHECK(el->arena == a);
    if (el->type == XML_TEXT) {
        CHECK(el->name == NULL);
        CHECK(el->text != NULL);
        CHECK(el->text_len > 0);
        CHECK(strlen(el->text) == el->text_len);   /* XML text holds no NUL */
        CHECK(el->children == NULL);
        return;
    }
    CHECK(el->type == XML_ELEMENT);
    /* depth: the stream element is 1, a stanza 2; max_depth - 1 stanza levels */
    CHECK(depth <= fuzz_limits.max_depth);
    CHECK(el->name != NULL && el->name[0] != '\0');
    CHECK(el->ns != NULL);
    /* the stream's content namespace is always the XML_NS_CONTENT pointer */
    if (strcmp(el->ns, content_ns) == 0)
        CHECK(el->ns == XML_NS_CONTENT);
    unsigned nattrs = 0;
    for (const struct xml_attr *at = el->attrs; at; at = at->next) {
        CHECK(at->name != NULL && at->value != NULL);
        nattrs++;
    }
    CHECK(nattrs <= fuzz_limits.max_attrs);
    const struct xml_node *last = NULL;
    int prev_text = 0;
    for (const struct xml_node *c = el->children; c; c = c->next) {
        CHECK(c->parent == el);
        /* adjacent character data is merged into one text node */
        CHECK(!(prev_text && c->type == XML_TEXT));
        prev_text = c->type == XML_TEXT;
        check_tree(c, a, depth + 1, content_ns);
        last = c;
    }
    CHECK(el->last_child == last);
}

static char *
serialize(const struct xml_node *el, const char *content_ns, size_t *len)
{
    struct strbuf b;
    strbuf_init(&b);
    xml_serialize(&b, el, content_ns);
    CHECK(!b.failed);
    CHECK(b.data != NULL && b.len > 0);
    *len = b.len;
    return b.data;
}

/* ---- the re-parse of a serialization ------------------------------------------------ */

struct reparse {
    int opens, stanzas, errors, closes;
    char *ser;
    size_t ser_len;
    const char *content_ns;
};

static void rp_open(void *ud, const struct xml_node *h) { (void)h; ((struct reparse *)ud)->opens++; }
static void rp_close(void *ud) { ((struct reparse *)ud)->closes++; }

static void
rp_error(void *ud, enum xml_error e, const char *detail)
{
    struct reparse *r = ud;
    fprintf(stderr, "fuzz_stream: re-parse error %s (%s)\n", xml_error_name(e), detail ? detail : "");
    r->errors++;
}

static void
rp_stanza(void *ud, struct xml_node *el)
{
    struct reparse *r = ud;
    r->stanzas++;
    if (r->ser == NULL)
        r->ser = serialize(el, r->content_ns, &r->ser_len);
    struct arena *a = el->arena;    /* not arena_free(&el->arena): see test_xml.c, known bug 1 */
    arena_free(&a);
}

static const struct xml_stream_cb rp_cb = { rp_open, rp_stanza, rp_close, rp_error };

static void
roundtrip(const char *ser, size_t len, const char *content_ns)
{
    /* serialization may be longer than the input (escapes, xmlns): no size limit */
    struct xml_limits lim = { 0, fuzz_limits.max_depth, fuzz_limits.max_attrs };
    struct reparse r;
    memset(&r, 0, sizeof r);
    r.content_ns = content_ns;
    struct xml_stream *s = xml_stream_new(&rp_cb, &r, &lim, content_ns);
    CHECK(s != NULL);
    struct strbuf hdr;
    strbuf_init(&hdr);
    strbuf_adds(&hdr, "<stream:stream xmlns='");
    strbuf_adds(&hdr, content_ns);
    strbuf_adds(&hdr, "' xmlns:stream='http://etherx.jabber.org/streams'>");
    CHECK(xml_stream_feed(s, hdr.data, hdr.len) == 0);
    strbuf_free(&hdr);
    int rc = xml_stream_feed(s, ser, len);
    if (rc != 0 || r.errors || r.stanzas != 1 || r.ser == NULL || r.ser_len != len ||
        memcmp(r.ser, ser, len) != 0) {
        fprintf(stderr, "fuzz_stream: round trip failed (rc %d, %d stanzas, %d errors)\n  first:  %.*s\n"
                "  second: %.*s\n", rc, r.stanzas, r.errors, (int)len, ser,
                r.ser ? (int)r.ser_len : 0, r.ser ? r.ser : "");
        abort();
    }
    CHECK(r.opens == 1 && r.closes == 0);
    free(r.ser);
    xml_stream_free(&s);
}

/* ---- the stream under test ---------------------------------------------------------- */

static void
on_open(void *ud, const struct xml_node *h)
{
    struct fuzz *f = ud;
    CHECK(!f->dead);
    CHECK(h != NULL && h->type == XML_ELEMENT && h->ns != NULL && h->name != NULL);
    CHECK(xml_stream_depth(f->s) == 1);
    f->opens++;
}

static void
on_stanza(void *ud, struct xml_node *el)
{
    struct fuzz *f = ud;
    CHECK(!f->dead);
    CHECK(el != NULL && el->parent == NULL && el->type == XML_ELEMENT && el->arena != NULL);
    CHECK(xml_stream_depth(f->s) == 1);
    f->stanzas++;
    check_tree(el, el->arena, 2, f->content_ns);

    size_t len;
    char *ser = serialize(el, f->content_ns, &len);
    /* a deep copy in another arena serializes the same, also after freeing the original */
    struct arena *ca = arena_new(64);
    CHECK(ca != NULL);
    struct xml_node *cp = xml_copy(ca, el);
    CHECK(cp != NULL && cp->parent == NULL);
    int restart = strcmp(el->name, "restart") == 0;
    int stop = strcmp(el->name, "stop") == 0;
    int skip_roundtrip = 0;
#ifdef FUZZ_IGNORE_XML_NS
    skip_roundtrip = uses_xml_ns(el);       /* known bug 5 */
#else
    (void)uses_xml_ns;
#endif
    struct arena *a = el->arena;            /* not arena_free(&el->arena): known bug 1 */
    arena_free(&a);
    size_t clen;
    char *cser = serialize(cp, f->content_ns, &clen);
    CHECK(clen == len && memcmp(cser, ser, len) == 0);
    free(cser);
    arena_free(&ca);

    if (!skip_roundtrip)
        roundtrip(ser, len, f->content_ns);
    free(ser);

    if ((f->flags & F_RESTART) && restart)
        xml_stream_restart(f->s);
    if ((f->flags & F_STOP) && stop) {
        xml_stream_stop(f->s);
        f->dead = 1;
    }
}

static void
on_close(void *ud)
{
    struct fuzz *f = ud;
    CHECK(!f->dead);
    f->closes++;
    f->dead = 1;
}

static void
on_error(void *ud, enum xml_error err, const char *detail)
{
    struct fuzz *f = ud;
    (void)detail;
    CHECK(!f->dead);
    CHECK(err > XML_OK && err <= XML_E_NOMEM);
    CHECK(xml_error_name(err) != NULL);
    /* nothing here allocates near the limits of the machine */
#ifdef FUZZ_IGNORE_RESUME_PREFIX
    if (!f->released)                       /* known bug 2 */
#endif
        CHECK(err != XML_E_NOMEM);
    f->errors++;
    f->dead = 1;
}

static const struct xml_stream_cb fuzz_cb = { on_open, on_stanza, on_close, on_error };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    struct fuzz f;
    memset(&f, 0, sizeof f);
    f.flags = data[0];
    f.content_ns = (f.flags & F_SERVER) ? XML_NS_SERVER : XML_NS_CLIENT;
    const char *in = (const char *)data + 4;
    size_t len = size - 4;
    size_t cut[5] = { 0, 0, 0, 0, len };
    for (int i = 0; i < 3; i++)
        cut[i + 1] = (size_t)data[i + 1] * len / 255;
    /* sort the three cuts */
    for (int i = 1; i < 4; i++)
        for (int k = i + 1; k < 4; k++)
            if (cut[k] < cut[i]) {
                size_t t = cut[i];
                cut[i] = cut[k];
                cut[k] = t;
            }

    f.s = xml_stream_new(&fuzz_cb, &f, &fuzz_limits, f.content_ns);
    CHECK(f.s != NULL);
    int failed = 0;
    for (int i = 0; i < 4; i++) {
        size_t n = cut[i + 1] - cut[i];
        int before = f.opens + f.stanzas + f.closes + f.errors;
        int rc = xml_stream_feed(f.s, in + cut[i], n);
        if (failed) {
            /* after -1 the stream stays dead and silent */
            CHECK(rc == -1);
            CHECK(before == f.opens + f.stanzas + f.closes + f.errors);
        }
        if (rc < 0) {
            failed = 1;
            CHECK(f.dead);
        } else {
            CHECK(rc == 0);
            CHECK(!f.errors && !f.closes);
        }
        if ((f.flags & F_RELEASE_IDLE) && xml_stream_release_idle(f.s) == 1) {
            f.released = 1;
            CHECK(xml_stream_depth(f.s) == 1);
            CHECK(xml_stream_release_idle(f.s) == 0);
        }
    }
    CHECK(f.errors <= 1 && f.closes <= 1);
    xml_stream_free(&f.s);
    CHECK(f.s == NULL);
    return 0;
}

#ifdef FUZZ_STANDALONE
int
main(int argc, char **argv)
{
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        FILE *fp = fopen(argv[i], "rb");
        if (fp == NULL) {
            perror(argv[i]);
            bad = 1;
            continue;
        }
        size_t cap = 4096, len = 0;
        uint8_t *buf = malloc(cap);
        size_t n;
        while (buf && (n = fread(buf + len, 1, cap - len, fp)) > 0) {
            len += n;
            if (len == cap) {
                uint8_t *nb = realloc(buf, cap *= 2);
                if (nb == NULL)
                    free(buf);
                buf = nb;
            }
        }
        fclose(fp);
        if (buf == NULL) {
            fprintf(stderr, "%s: out of memory\n", argv[i]);
            return 1;
        }
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        printf("ok %s\n", argv[i]);
    }
    return bad;
}
#endif
