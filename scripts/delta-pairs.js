'use strict';
/**
 * Real code pairs for delta updates (docs/DELTA.md): compiles pairs of the
 * same program for the ESP32-C3's instruction set (RISC-V, -march=rv32imc
 * -mabi=ilp32) with Debian's gcc-riscv64-unknown-elf, differing as updates
 * do, and packs each build as an ESP32-C3 app image with the package's
 * image builder (dist/lib/image/app-image-builder.js: run `npm run build`
 * first). Nothing it builds is kept in the repository.
 *
 * The program: a small app (its main.c below) around the OTA core
 * (firmware/components/ble_ota_core), zlib and libiberty (demanglers,
 * regex, MD5, SHA-1, hash tables, ...), both from Debian's binutils-source,
 * over a few string and memory functions of our own; about 200 KB of code
 * and constant data. The unrelated program is newlib's libm (Debian's
 * newlib-source) with another main.
 *
 *   one-function   one function of the app changed (its code grows: all code after it moves)
 *   one-string     one message changed (longer: all constant data after it moves)
 *   added-function a function added and called
 *   compiler-flag  the whole program built with -Os instead of -O2
 *   unrelated      another program
 *
 * Usage: node scripts/delta-pairs.js OUT_DIR
 *   writes OUT_DIR/<pair>.old.bin and <pair>.new.bin and OUT_DIR/pairs.json.
 * Needs: apt-get install gcc-riscv64-unknown-elf binutils-source newlib-source
 * Exits with status 2 and says what is missing when it cannot build.
 * From code: await require('./delta-pairs').buildPairs() -> [{ name, what, old, new }]
 * (rejects with PairsUnavailable and that message).
 */
const { execFile, execFileSync } = require('node:child_process');
const { availableParallelism, cpus } = require('node:os');
const { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve, basename } = require('node:path');

const ROOT = resolve(__dirname, '..');
const CC = 'riscv64-unknown-elf-gcc';
const OBJCOPY = 'riscv64-unknown-elf-objcopy';
const ARCH = ['-march=rv32imc', '-mabi=ilp32'];
const BINUTILS_TAR = '/usr/src/binutils/binutils-2.40.tar.xz';
const NEWLIB_TAR = '/usr/src/newlib/newlib-3.3.0.tar.xz';

class PairsUnavailable extends Error {}

const ZLIB = ['adler32', 'compress', 'crc32', 'deflate', 'infback', 'inffast', 'inflate', 'inftrees', 'trees', 'uncompr', 'zutil'];
const LIBIBERTY = [
  'cp-demangle',
  'cplus-dem',
  'd-demangle',
  'rust-demangle',
  'regex',
  'md5',
  'sha1',
  'hashtab',
  'splay-tree',
  'dwarfnames',
  'crc32',
  'safe-ctype',
  'obstack',
  'dyn-string',
  'objalloc',
  'partition',
  'fibheap',
  'argv',
  'concat',
  'hex',
  'fnmatch',
  'lbasename',
  'xmalloc',
  'xstrdup',
  'xexit',
  'sort',
  'bsearch',
  'spaces',
];

/** The few C library functions the libraries call, our own, plain: no libc exists for this target here. */
const LIBC_C = String.raw`
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "pairs_libc.h"

int errno;
static int *pairs_errno(void) { return &errno; }
int *__errno(void) { return pairs_errno(); }
/* newlib's libm keeps signgam in its reentrancy structure: zeroed room for it. */
static long long s_reent[128];
void *_impure_ptr = s_reent;
struct pairs_file { int fd; };
static struct pairs_file s_out = { 1 }, s_err = { 2 };
FILE *stdout = &s_out;
FILE *stderr = &s_err;

void *memcpy(void *d, const void *s, size_t n) { unsigned char *a = d; const unsigned char *b = s; while (n--) *a++ = *b++; return d; }
void *memmove(void *d, const void *s, size_t n) {
  unsigned char *a = d; const unsigned char *b = s;
  if (a < b) { while (n--) *a++ = *b++; } else { a += n; b += n; while (n--) *--a = *--b; }
  return d;
}
void *memset(void *d, int c, size_t n) { unsigned char *a = d; while (n--) *a++ = (unsigned char)c; return d; }
int memcmp(const void *x, const void *y, size_t n) {
  const unsigned char *a = x, *b = y;
  for (; n; n--, a++, b++) if (*a != *b) return *a - *b;
  return 0;
}
void *memchr(const void *s, int c, size_t n) { const unsigned char *a = s; for (; n; n--, a++) if (*a == (unsigned char)c) return (void *)a; return NULL; }
size_t strlen(const char *s) { size_t n = 0; while (s[n]) n++; return n; }
size_t strnlen(const char *s, size_t max) { size_t n = 0; while (n < max && s[n]) n++; return n; }
int strcmp(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return (unsigned char)*a - (unsigned char)*b; }
int strncmp(const char *a, const char *b, size_t n) { for (; n; n--, a++, b++) { if (*a != *b || !*a) return (unsigned char)*a - (unsigned char)*b; } return 0; }
char *strchr(const char *s, int c) { for (;; s++) { if (*s == (char)c) return (char *)s; if (!*s) return NULL; } }
char *strrchr(const char *s, int c) { const char *r = NULL; for (;; s++) { if (*s == (char)c) r = s; if (!*s) return (char *)r; } }
char *strcpy(char *d, const char *s) { char *r = d; while ((*d++ = *s++)) {} return r; }
char *strncpy(char *d, const char *s, size_t n) { size_t i = 0; for (; i < n && s[i]; i++) d[i] = s[i]; for (; i < n; i++) d[i] = 0; return d; }
char *strcat(char *d, const char *s) { strcpy(d + strlen(d), s); return d; }
char *strstr(const char *h, const char *n) { size_t k = strlen(n); for (; *h; h++) if (!strncmp(h, n, k)) return (char *)h; return k ? NULL : (char *)h; }

/* A heap in a static arena: enough for the app's calls, never given back. */
static unsigned char s_heap[96 * 1024];
static size_t s_heap_used;
void *malloc(size_t n) {
  size_t at = (s_heap_used + 7u) & ~(size_t)7u;
  if (n > sizeof(s_heap) - 8 || at + n + 8 > sizeof(s_heap)) return NULL;
  *(size_t *)(s_heap + at) = n;
  s_heap_used = at + 8 + n;
  return s_heap + at + 8;
}
void free(void *p) { (void)p; }
void *calloc(size_t n, size_t m) { void *p = malloc(n * m); if (p) memset(p, 0, n * m); return p; }
void *realloc(void *p, size_t n) {
  void *q = malloc(n);
  if (q && p) { size_t old = *((size_t *)p - 2); memcpy(q, p, old < n ? old : n); }
  return q;
}
char *strdup(const char *s) { size_t n = strlen(s) + 1; char *d = malloc(n); return d ? memcpy(d, s, n) : NULL; }
char *strndup(const char *s, size_t n) { size_t k = strnlen(s, n); char *d = malloc(k + 1); if (d) { memcpy(d, s, k); d[k] = 0; } return d; }
void abort(void) { for (;;) {} }
void exit(int code) { (void)code; for (;;) {} }
char *getenv(const char *name) { (void)name; return NULL; }

int isdigit(int c) { return c >= '0' && c <= '9'; }
int islower(int c) { return c >= 'a' && c <= 'z'; }
int isupper(int c) { return c >= 'A' && c <= 'Z'; }
int isalpha(int c) { return islower(c) || isupper(c); }
int isalnum(int c) { return isalpha(c) || isdigit(c); }
int isspace(int c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
int isxdigit(int c) { return isdigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
int isprint(int c) { return c >= 0x20 && c < 0x7f; }
int iscntrl(int c) { return (c >= 0 && c < 0x20) || c == 0x7f; }
int ispunct(int c) { return isprint(c) && !isalnum(c) && c != ' '; }
int tolower(int c) { return isupper(c) ? c + 32 : c; }
int toupper(int c) { return islower(c) ? c - 32 : c; }

unsigned long strtoul(const char *s, char **end, int base) {
  unsigned long v = 0;
  while (isspace(*s)) s++;
  if ((base == 0 || base == 16) && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) { s += 2; base = 16; }
  if (base == 0) base = *s == '0' ? 8 : 10;
  for (;; s++) {
    int d = isdigit(*s) ? *s - '0' : isalpha(*s) ? tolower(*s) - 'a' + 10 : 99;
    if (d >= base) break;
    v = v * (unsigned long)base + (unsigned long)d;
  }
  if (end) *end = (char *)s;
  return v;
}
long strtol(const char *s, char **end, int base) {
  while (isspace(*s)) s++;
  if (*s == '-') return -(long)strtoul(s + 1, end, base);
  return (long)strtoul(*s == '+' ? s + 1 : s, end, base);
}
int atoi(const char *s) { return (int)strtol(s, NULL, 10); }
void qsort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *)) {
  unsigned char *a = base, tmp[64];
  if (size > sizeof(tmp)) return;
  for (size_t i = 1; i < n; i++)
    for (size_t j = i; j > 0 && cmp(a + (j - 1) * size, a + j * size) > 0; j--) {
      memcpy(tmp, a + j * size, size); memcpy(a + j * size, a + (j - 1) * size, size); memcpy(a + (j - 1) * size, tmp, size);
    }
}

/* printf family: %d %i %u %x %X %o %c %s %p %%, with l, ll, z, h and a width. */
static void put(char *buf, size_t cap, size_t *n, char c) { if (*n + 1 < cap) buf[*n] = c; (*n)++; }
int vsnprintf(char *buf, size_t cap, const char *fmt, va_list ap) {
  size_t n = 0;
  for (; *fmt; fmt++) {
    if (*fmt != '%') { put(buf, cap, &n, *fmt); continue; }
    fmt++;
    int width = 0, longs = 0, zero = 0;
    if (*fmt == '0') { zero = 1; fmt++; }
    while (isdigit(*fmt)) width = width * 10 + *fmt++ - '0';
    while (*fmt == 'l' || *fmt == 'z' || *fmt == 'h') { if (*fmt != 'h') longs++; fmt++; }
    char digits[24]; int k = 0; unsigned long long v = 0; int neg = 0, base = 10;
    switch (*fmt) {
    case 'd': case 'i': {
      long long s = longs > 1 ? va_arg(ap, long long) : longs ? va_arg(ap, long) : va_arg(ap, int);
      neg = s < 0; v = neg ? (unsigned long long)-s : (unsigned long long)s; break;
    }
    case 'u': case 'x': case 'X': case 'o':
      v = longs > 1 ? va_arg(ap, unsigned long long) : longs ? va_arg(ap, unsigned long) : va_arg(ap, unsigned);
      base = *fmt == 'o' ? 8 : *fmt == 'u' ? 10 : 16; break;
    case 'p': v = (uintptr_t)va_arg(ap, void *); base = 16; break;
    case 'c': put(buf, cap, &n, (char)va_arg(ap, int)); continue;
    case 's': { const char *s = va_arg(ap, const char *); if (!s) s = "(null)"; while (*s) put(buf, cap, &n, *s++); continue; }
    default: put(buf, cap, &n, *fmt); continue;
    }
    do { digits[k++] = "0123456789abcdef"[v % (unsigned)base]; v /= (unsigned)base; } while (v);
    if (neg) digits[k++] = '-';
    while (k < width--) put(buf, cap, &n, zero ? '0' : ' ');
    while (k) put(buf, cap, &n, digits[--k]);
  }
  if (cap) buf[n < cap ? n : cap - 1] = 0;
  return (int)n;
}
int snprintf(char *buf, size_t n, const char *fmt, ...) { va_list ap; va_start(ap, fmt); int r = vsnprintf(buf, n, fmt, ap); va_end(ap); return r; }
int sprintf(char *buf, const char *fmt, ...) { va_list ap; va_start(ap, fmt); int r = vsnprintf(buf, 4096, fmt, ap); va_end(ap); return r; }
/* Output goes to the UART's FIFO register (ESP32-C3: UART0 at 0x60000000). */
static void uart_write(const char *s, size_t n) { volatile uint32_t *fifo = (volatile uint32_t *)0x60000000u; while (n--) *fifo = (unsigned char)*s++; }
int fputs(const char *s, FILE *f) { (void)f; uart_write(s, strlen(s)); return 0; }
int fputc(int c, FILE *f) { (void)f; char ch = (char)c; uart_write(&ch, 1); return c; }
/* No file system: nothing opens. */
FILE *fopen(const char *path, const char *mode) { (void)path; (void)mode; errno = EINVAL; return NULL; }
int fclose(FILE *f) { (void)f; return 0; }
size_t fread(void *p, size_t size, size_t n, FILE *f) { (void)p; (void)size; (void)n; (void)f; return 0; }
int fseek(FILE *f, long off, int whence) { (void)f; (void)off; (void)whence; return -1; }
long ftell(FILE *f) { (void)f; return -1; }
int feof(FILE *f) { (void)f; return 1; }
int ferror(FILE *f) { (void)f; return 0; }
int putchar(int c) { char ch = (char)c; uart_write(&ch, 1); return c; }
static int vprint(const char *fmt, va_list ap) { char line[160]; int r = vsnprintf(line, sizeof(line), fmt, ap); uart_write(line, strlen(line)); return r; }
int printf(const char *fmt, ...) { va_list ap; va_start(ap, fmt); int r = vprint(fmt, ap); va_end(ap); return r; }
int fprintf(FILE *f, const char *fmt, ...) { (void)f; va_list ap; va_start(ap, fmt); int r = vprint(fmt, ap); va_end(ap); return r; }
`;

/** Declarations for the above, in the place of the C library's headers. */
const HEADERS = {
  'pairs_libc.h': String.raw`
#ifndef PAIRS_LIBC_H
#define PAIRS_LIBC_H
#include <stddef.h>
#include <stdarg.h>
#define EOF (-1)
#define SEEK_SET 0
#define SEEK_CUR 1
#define SEEK_END 2
typedef struct pairs_file FILE;
extern FILE *stderr, *stdout;
extern int errno;
#define ENOMEM 12
#define EINVAL 22
#define ERANGE 34
void *memcpy(void *, const void *, size_t); void *memmove(void *, const void *, size_t); void *memset(void *, int, size_t);
int memcmp(const void *, const void *, size_t); void *memchr(const void *, int, size_t);
size_t strlen(const char *); size_t strnlen(const char *, size_t); int strcmp(const char *, const char *);
int strncmp(const char *, const char *, size_t); char *strchr(const char *, int); char *strrchr(const char *, int);
char *strcpy(char *, const char *); char *strncpy(char *, const char *, size_t); char *strcat(char *, const char *);
char *strdup(const char *); char *strndup(const char *, size_t); char *strstr(const char *, const char *);
void *malloc(size_t); void *calloc(size_t, size_t); void *realloc(void *, size_t); void free(void *);
void abort(void) __attribute__((noreturn)); void exit(int) __attribute__((noreturn)); char *getenv(const char *);
long strtol(const char *, char **, int); unsigned long strtoul(const char *, char **, int); int atoi(const char *);
void qsort(void *, size_t, size_t, int (*)(const void *, const void *));
int isdigit(int); int isalpha(int); int isalnum(int); int isspace(int); int isupper(int); int islower(int);
int isxdigit(int); int isprint(int); int iscntrl(int); int ispunct(int); int tolower(int); int toupper(int);
int vsnprintf(char *, size_t, const char *, va_list); int snprintf(char *, size_t, const char *, ...);
int sprintf(char *, const char *, ...); int fprintf(FILE *, const char *, ...); int printf(const char *, ...);
int fputs(const char *, FILE *); int putchar(int); int fputc(int, FILE *);
FILE *fopen(const char *, const char *); int fclose(FILE *); size_t fread(void *, size_t, size_t, FILE *);
int fseek(FILE *, long, int); long ftell(FILE *); int feof(FILE *); int ferror(FILE *);
#endif
`,
  'string.h': '#include "pairs_libc.h"\n',
  'stdlib.h': '#include "pairs_libc.h"\n',
  'stdio.h': '#include "pairs_libc.h"\n',
  'ctype.h': '#include "pairs_libc.h"\n',
  'errno.h': '#include "pairs_libc.h"\n',
  'malloc.h': '#include "pairs_libc.h"\n',
  'unistd.h': '',
  'sys/types.h': '#include <stddef.h>\ntypedef long ssize_t;\ntypedef long off_t;\n',
  'inttypes.h': '#include <stdint.h>\n#define PRIu64 "llu"\n#define PRIx64 "llx"\n#define PRId64 "lld"\n',
  // libiberty's configure answers, for this target.
  'config.h':
    ['STRING_H', 'STDLIB_H', 'LIMITS_H', 'STDINT_H', 'INTTYPES_H', 'SYS_TYPES_H'].map((h) => `#define HAVE_${h} 1\n`).join('') +
    '#define STDC_HEADERS 1\n#define SIZEOF_INT 4\n#define SIZEOF_LONG 4\n#define SIZEOF_SIZE_T 4\n#define SIZEOF_LONG_LONG 8\n' +
    ['BASENAME', 'ASPRINTF', 'VASPRINTF', 'SNPRINTF', 'VSNPRINTF', 'STRNLEN', 'STRTOL', 'STRTOUL', 'MALLOC', 'REALLOC', 'CALLOC', 'FREE', 'GETENV']
      .map((d) => `#define HAVE_DECL_${d} 1\n`)
      .join(''),
};

/** The app: a sensor node that updates itself, using every library it links. Variants edit it as a developer would. */
const MAIN_C = String.raw`
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <stdio.h>
#include "ble_ota_core.h"
#include "ble_ota_port.h"
#include "zlib.h"
#include "demangle.h"
#include "md5.h"
#include "sha1.h"
#include "hashtab.h"
#include "xregex.h"

#define SAMPLES 32
static int32_t s_samples[SAMPLES];
static unsigned s_next;
static ble_ota_core_t s_core;
static unsigned char s_zbuf[8192];
static size_t s_zused;

/*FILTER*/
static int32_t app_filter(int32_t raw)
{
    s_samples[s_next++ % SAMPLES] = raw;
    int64_t sum = 0;
    for (unsigned i = 0; i < 8 && i < s_next; i++) {
        sum += s_samples[(s_next - 1 - i) % SAMPLES];
    }
    return (int32_t)(sum / (s_next < 8 ? (int64_t)s_next : 8));
}
/*END FILTER*/

static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    (void)opaque;
    size_t n = (size_t)items * size;
    if (s_zused + n > sizeof(s_zbuf)) return Z_NULL;
    s_zused += n;
    return s_zbuf + s_zused - n;
}
static void z_free(voidpf opaque, voidpf p) { (void)opaque; (void)p; }

static ble_ota_port_err_t p_ok(void *ctx) { (void)ctx; return BLE_OTA_PORT_OK; }
static ble_ota_port_err_t p_begin(void *ctx, uint32_t n) { (void)ctx; (void)n; return BLE_OTA_PORT_OK; }
static ble_ota_port_err_t p_write(void *ctx, const uint8_t *d, size_t n) { (void)ctx; (void)d; (void)n; return BLE_OTA_PORT_OK; }
static void p_void(void *ctx) { (void)ctx; }
static void p_restart(void *ctx, uint32_t ms) { (void)ctx; (void)ms; }
static void p_control(void *ctx, uint8_t v) { (void)ctx; (void)v; }
static ble_ota_img_state_t p_state(void *ctx) { (void)ctx; return BLE_OTA_IMG_VALID; }
static void p_info(void *ctx, ble_ota_device_info_t *out) { (void)ctx; memset(out, 0, sizeof(*out)); out->chip_id = 5; }
static uint32_t s_ms;
static uint32_t p_now(void *ctx) { (void)ctx; return s_ms; }
static void p_notify(void *ctx, const uint8_t *d, size_t n) { (void)ctx; (void)d; (void)n; }
static ble_ota_port_err_t p_confirm(void *ctx, bool r) { (void)ctx; (void)r; return BLE_OTA_PORT_OK; }
static bool p_confirm_required(void *ctx) { (void)ctx; return false; }
static void p_random(void *ctx, uint8_t *out, size_t n) { (void)ctx; for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(i * 131u + s_ms); }
static void p_log(void *ctx, ble_ota_log_level_t level, const char *msg) { (void)ctx; printf("[%d] %s\n", (int)level, msg); }

static const ble_ota_port_t k_port = {
    .slot_begin = p_begin, .slot_write = p_write, .slot_end = p_ok, .slot_abort = p_void, .set_boot_slot = p_ok,
    .restart = p_restart, .notify_control = p_control, .running_state = p_state, .mark_valid = p_ok, .rollback = p_void,
    .device_info = p_info, .now_ms = p_now, .notify_command = p_notify, .set_confirm_required = p_confirm,
    .confirm_required = p_confirm_required, .random = p_random, .log = p_log,
};

static hashval_t h_hash(const void *p) { return htab_hash_string(p); }
static int h_eq(const void *a, const void *b) { return strcmp(a, b) == 0; }

/*ADDED*/

int main(void)
{
    static const ble_ota_config_t config = { 0 };
    printf("sensor node ready, firmware %s\n", "1.0");
    ble_ota_core_init(&s_core, &k_port, &config);

    z_stream z;
    memset(&z, 0, sizeof(z));
    z.zalloc = z_alloc;
    z.zfree = z_free;
    static unsigned char in[512], out[600];
    for (int i = 0; i < (int)sizeof(in); i++) in[i] = (unsigned char)app_filter(i * 7);
    if (deflateInit(&z, 6) == Z_OK) {
        z.next_in = in; z.avail_in = sizeof(in); z.next_out = out; z.avail_out = sizeof(out);
        deflate(&z, Z_FINISH);
        deflateEnd(&z);
    }
    char *name = cplus_demangle("_ZN3ble3ota4core5beginEv", DMGL_PARAMS | DMGL_ANSI);
    printf("demangled: %s\n", name ? name : "?");

    unsigned char digest[20];
    md5_buffer((const char *)out, sizeof(out), digest);
    sha1_buffer((const char *)out, sizeof(out), digest);

    htab_t names = htab_create(16, h_hash, h_eq, NULL);
    *htab_find_slot(names, "kitchen", INSERT) = (void *)"kitchen";

    regex_t re;
    if (xregcomp(&re, "^sensor-[0-9]+$", REG_EXTENDED) == 0) {
        printf("match: %d\n", xregexec(&re, "sensor-42", 0, NULL, 0) == 0);
    }
    /*CALL*/
    for (;;) {
        s_ms += 10;
        ble_ota_core_tick(&s_core);
    }
}
`;

/** The unrelated program: a calculator over newlib's libm. */
const UNRELATED_MAIN_C = String.raw`
#include <math.h>
volatile double g_in[8] = { 0.5, 1.5, 2.25, 3.0, 10.0, 0.1, 7.0, 100.0 };
volatile double g_out[32];
volatile float g_fout[16];
int main(void)
{
    for (;;) {
        for (int i = 0; i < 8; i++) {
            double x = g_in[i];
            g_out[(i * 4) % 32] = sin(x) + cos(x) * tan(x / 4) + exp(-x) + log(x) + sqrt(x) + pow(x, 1.5);
            g_out[(i * 4 + 1) % 32] = atan2(x, 1.0 + x) + asin(x / 200.0) + acos(x / 300.0) + sinh(x / 10) + cosh(x / 10) + tanh(x);
            g_out[(i * 4 + 2) % 32] = log10(x) + log1p(x) + expm1(x / 10) + cbrt(x) + hypot(x, 3.0) + fmod(x, 0.7) + erf(x) + lgamma(x) + j0(x) + y0(x);
            g_fout[i] = sinf((float)x) + expf((float)x / 8) + logf((float)x) + powf((float)x, 0.5f) + atanf((float)x) + erff((float)x);
        }
    }
}
`;

/** The variants of the app, as source edits: [file, from, to]. */
const EDITS = {
  'one-function': [
    'main.c',
    /\/\*FILTER\*\/[\s\S]*\/\*END FILTER\*\//,
    String.raw`/*FILTER*/
static int32_t app_filter(int32_t raw)
{
    /* A spike (more than 4x the last value) is dropped; the average runs over 16 samples. */
    if (s_next > 0) {
        int32_t last = s_samples[(s_next - 1) % SAMPLES];
        if (last != 0 && (raw > 4 * last || raw < -4 * last)) {
            raw = last;
        }
    }
    s_samples[s_next++ % SAMPLES] = raw;
    int64_t sum = 0;
    for (unsigned i = 0; i < 16 && i < s_next; i++) {
        sum += s_samples[(s_next - 1 - i) % SAMPLES];
    }
    return (int32_t)(sum / (s_next < 16 ? (int64_t)s_next : 16));
}
/*END FILTER*/`,
  ],
  'one-string': ['main.c', '"sensor node ready, firmware %s\\n"', '"sensor node ready (BLE OTA, delta updates), firmware %s\\n"'],
  'added-function': [
    'main.c',
    '/*ADDED*/',
    String.raw`static void app_report(void)
{
    int32_t min = INT32_MAX, max = INT32_MIN;
    for (unsigned i = 0; i < SAMPLES; i++) {
        if (s_samples[i] < min) min = s_samples[i];
        if (s_samples[i] > max) max = s_samples[i];
    }
    printf("samples: %u, min %ld, max %ld\n", s_next, (long)min, (long)max);
}`,
  ],
};

function have(cmd) {
  try {
    execFileSync(cmd, ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** What is missing to build the pairs, as advice; undefined when nothing is. */
function missing() {
  const need = [];
  if (!have(CC) || !have(OBJCOPY)) need.push('gcc-riscv64-unknown-elf');
  if (!existsSync(BINUTILS_TAR)) need.push('binutils-source');
  if (!existsSync(NEWLIB_TAR)) need.push('newlib-source');
  if (!existsSync(join(ROOT, 'dist/lib/image/app-image-builder.js'))) return 'the package is not built: run npm run build';
  return need.length ? `not installed: ${need.join(', ')} (apt-get install ${need.join(' ')})` : undefined;
}

function failure(cmd, args, err) {
  const file = args.find((a) => a.endsWith('.c')) ?? args[args.length - 1];
  return new Error(
    `${cmd} failed on ${file}:\n${String(err.stderr || err.message)
      .split('\n')
      .slice(0, 20)
      .join('\n')}`,
  );
}

function run(cmd, args) {
  try {
    return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 1 << 26 });
  } catch (err) {
    throw failure(cmd, args, err);
  }
}

const JOBS = typeof availableParallelism === 'function' ? availableParallelism() : cpus().length;

/** Runs the commands, JOBS at a time. */
async function runAll(commands) {
  let next = 0;
  const worker = async () => {
    while (next < commands.length) {
      const [cmd, args] = commands[next++];
      await new Promise((done, fail) =>
        execFile(cmd, args, { maxBuffer: 1 << 26 }, (err, stdout, stderr) => (err ? fail(failure(cmd, args, { stderr, message: err.message })) : done())),
      );
    }
  };
  await Promise.all(Array.from({ length: JOBS }, worker));
}

/** Compiles sources into dir/obj-<tag>/ and links an ELF; returns its path. */
async function build(work, tag, sources, flags, includes) {
  const objDir = join(work, `obj-${tag}`);
  mkdirSync(objDir, { recursive: true });
  const gccInclude = run(CC, ['-print-file-name=include']).trim();
  const gccFixed = run(CC, ['-print-file-name=include-fixed']).trim();
  const objects = sources.map(({ file }, i) => join(objDir, `${i}-${basename(file, '.c')}.o`));
  await runAll(
    sources.map(({ file, defines = [], std = [], only }, i) => [
      CC,
      [
        ...ARCH,
        ...flags,
        ...std,
        '-ffreestanding',
        '-fno-builtin',
        '-nostdinc',
        '-w',
        '-DHAVE_CONFIG_H',
        ...(only ?? includes).map((d) => `-I${d}`),
        '-isystem',
        gccInclude,
        '-isystem',
        gccFixed,
        ...defines,
        '-c',
        file,
        '-o',
        objects[i],
      ],
    ]),
  );
  const elf = join(work, `${tag}.elf`);
  run(CC, [...ARCH, '-nostdlib', '-static', '-T', join(work, 'link.ld'), ...objects, '-lgcc', '-o', elf]);
  return elf;
}

/** The ELF's flash contents as an ESP32 app image lays them out: constant data, initialised data, code. */
function flat(work, elf) {
  const parts = ['.rodata', '.data', '.text'].map((section) => {
    const out = join(work, `${basename(elf)}${section}.bin`);
    run(OBJCOPY, ['-O', 'binary', `--only-section=${section}`, elf, out]);
    return readFileSync(out);
  });
  return Buffer.concat(parts);
}

/** Packs a program as an ESP32-C3 app image (chip id 5) with the package's builder. */
function pack(code, version, seed) {
  const { buildAppImage } = require(join(ROOT, 'dist/lib/image/app-image-builder.js'));
  const { ESP_APP_DESC_OFFSET, ESP_APP_DESC_SIZE } = require(join(ROOT, 'dist/lib/image/esp-image.js'));
  // The builder fills segment data from `fill` at the same image offsets: the code follows the app descriptor.
  const start = ESP_APP_DESC_OFFSET + ESP_APP_DESC_SIZE;
  const size = start + code.length + 256;
  const fill = Buffer.alloc(size + 4096);
  code.copy(fill, start);
  return buildAppImage({ chipId: 5, size, version, projectName: 'sensor-node', seed, fill });
}

const LINK_LD = `
ENTRY(main)
SECTIONS
{
  .text 0x42000020 : { *(.text.startup .text.startup.*) *(.text .text.*) }
  .rodata 0x3C000020 : { *(.rodata .rodata.* .srodata .srodata.*) }
  .data 0x3FC80000 : { *(.data .data.* .sdata .sdata.*) }
  .bss : { *(.bss .bss.* .sbss .sbss.* COMMON) }
  /DISCARD/ : { *(.comment) *(.riscv.attributes) *(.note*) *(.eh_frame*) }
}
`;

/** Builds every pair; returns [{ name, what, old, new }] (app images). */
async function buildPairs() {
  const why = missing();
  if (why) throw new PairsUnavailable(`delta pairs not built: ${why}`);
  const work = mkdtempSync(join(tmpdir(), 'ble-ota-delta-pairs-'));
  try {
    run('tar', ['-xJf', BINUTILS_TAR, '-C', work, 'binutils-2.40/zlib', 'binutils-2.40/libiberty', 'binutils-2.40/include']);
    run('tar', ['-xJf', NEWLIB_TAR, '-C', work, 'newlib-salsa/newlib/libm', 'newlib-salsa/newlib/libc/include']);
    const sys = join(work, 'sys');
    for (const [name, text] of Object.entries(HEADERS)) {
      mkdirSync(join(sys, name, '..'), { recursive: true });
      writeFileSync(join(sys, name), text);
    }
    writeFileSync(join(work, 'link.ld'), LINK_LD);
    writeFileSync(join(work, 'libc.c'), LIBC_C);
    const core = join(ROOT, 'firmware/components/ble_ota_core');
    const zlib = join(work, 'binutils-2.40/zlib');
    const libiberty = join(work, 'binutils-2.40/libiberty');
    const bIncludes = join(work, 'binutils-2.40/include');
    const coreSources = readdirSync(core)
      .filter((f) => f.endsWith('.c'))
      .sort()
      .map((f) => ({ file: join(core, f), std: ['-std=c11'] }));

    const app = async (tag, mainText, flags) => {
      const dir = join(work, `app-${tag}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'main.c'), mainText);
      const sources = [
        { file: join(dir, 'main.c') },
        ...coreSources,
        ...ZLIB.map((f) => ({ file: join(zlib, `${f}.c`), defines: ['-DZ_SOLO'] })),
        ...LIBIBERTY.map((f) => ({ file: join(libiberty, `${f}.c`) })),
        { file: join(work, 'libc.c') },
      ];
      return flat(work, await build(work, tag, sources, flags, [sys, join(core, 'include'), zlib, bIncludes]));
    };
    const edit = (name) => {
      const [, from, to] = EDITS[name];
      const text = MAIN_C.replace(from, to);
      if (text === MAIN_C) throw new Error(`the ${name} edit did not apply`);
      return name === 'added-function' ? text.replace('/*CALL*/', 'app_report();') : text;
    };
    const base = await app('base', MAIN_C, ['-O2']);
    const newlib = join(work, 'newlib-salsa/newlib');
    const udir = join(work, 'app-unrelated');
    mkdirSync(udir, { recursive: true });
    writeFileSync(join(udir, 'main.c'), UNRELATED_MAIN_C);
    // newlib's own headers for its libm and the program around it; ours for our functions.
    const newlibIncludes = [join(newlib, 'libc/include'), join(newlib, 'libm/common')];
    const libm = ['math', 'common'].flatMap((d) =>
      readdirSync(join(newlib, 'libm', d))
        .filter((f) => f.endsWith('.c'))
        .sort()
        .map((f) => ({ file: join(newlib, 'libm', d, f), defines: ['-D_IEEE_LIBM'] })),
    );
    const unrelated = flat(work, await build(work, 'unrelated', [{ file: join(udir, 'main.c') }, ...libm, { file: join(work, 'libc.c'), only: [sys] }], ['-O2'], newlibIncludes));
    const builds = [
      ['one-function', 'one function of the app changed (it grows)', await app('one-function', edit('one-function'), ['-O2'])],
      ['one-string', 'one message changed (longer)', await app('one-string', edit('one-string'), ['-O2'])],
      ['added-function', 'a function added and called', await app('added-function', edit('added-function'), ['-O2'])],
      ['compiler-flag', 'the whole program built with -Os instead of -O2', await app('compiler-flag', MAIN_C, ['-Os'])],
      ['unrelated', "another program (newlib's libm)", unrelated],
    ];
    const old = pack(base, '1.0.0', 1);
    return builds.map(([name, what, code], i) => ({ name, what, old, new: pack(code, '1.0.1', 2 + i), codeBytes: { old: base.length, new: code.length } }));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

module.exports = { buildPairs, missing, PairsUnavailable };

if (require.main === module) {
  const out = process.argv[2];
  if (!out) {
    console.error('usage: node scripts/delta-pairs.js OUT_DIR');
    process.exit(1);
  }
  buildPairs().then(write, (err) => {
    console.error(err.message);
    process.exit(err instanceof PairsUnavailable ? 2 : 1);
  });
}

function write(pairs) {
  const out = process.argv[2];
  mkdirSync(out, { recursive: true });
  for (const p of pairs) {
    writeFileSync(join(out, `${p.name}.old.bin`), p.old);
    writeFileSync(join(out, `${p.name}.new.bin`), p.new);
  }
  writeFileSync(
    join(out, 'pairs.json'),
    JSON.stringify(
      pairs.map((p) => ({ name: p.name, what: p.what, old: p.old.length, new: p.new.length })),
      null,
      2,
    ) + '\n',
  );
  for (const p of pairs) console.log(`${p.name.padEnd(15)} ${String(p.old.length).padStart(7)} -> ${String(p.new.length).padStart(7)} bytes  ${p.what}`);
}
