/*
 * Smoke test of the virtual ESP32 through its line protocol, as the
 * TypeScript side drives it: start-up lines, a seed-protocol update with a
 * real-time restart, the new image confirmed, flash contents, a transfer
 * dropped by a disconnect, power cycle, malformed requests.
 *
 * Usage: smoke-virtual PATH/TO/virtual-esp32
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ble_ota_gatt.h"
#include "ble_ota_le.h"
#include "ble_ota_protocol.h"
#include "ble_ota_sha256.h"
#include "host_flash.h"
#include "host_image.h"
#include "host_session.h"
#include "test.h"
#include "test_sign.h"

#define RESTART_DELAY_MS 150
#define REPLY_TIMEOUT_MS 5000
#define MAX_EVENTS       256
#define EVENT_LEN        200

static const char *s_binary;
static pid_t s_child = -1;
static int s_to_dev = -1;
static int s_from_dev = -1;
static unsigned s_next_id = 1;

/* Bytes read from the device and not yet split into lines. */
static char *s_rbuf;
static size_t s_rlen;
static size_t s_rcap;

/* Events (non-reply lines) since the last events_clear(). */
static char s_events[MAX_EVENTS][EVENT_LEN];
static int s_event_count;

static uint8_t s_image[96 * 1024];
static size_t s_image_len;

static int64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- child process -------------------------------------------------------- */

/* quiet: the child's stderr goes to /dev/null (for expected failures).
 * The device stands for a development build (no key, unsigned images)
 * unless extra_args say otherwise: later options win. */
static int
spawn_device(char *const extra_args[], bool quiet)
{
    int in_pipe[2], out_pipe[2];
    char *argv[24] = { (char *)s_binary,
                       "--restart-delay-ms",
                       "150",
                       "--name",
                       "smoke",
                       "--allow-unauthenticated",
                       "on",
                       "--require-signature",
                       "off" };
    int argc = 9;

    for (int i = 0; extra_args != NULL && extra_args[i] != NULL && argc < 23; i++) {
        argv[argc++] = extra_args[i];
    }
    argv[argc] = NULL;
    if (pipe(in_pipe) != 0 || pipe(out_pipe) != 0) {
        return -1;
    }
    s_child = fork();
    if (s_child < 0) {
        return -1;
    }
    if (s_child == 0) {
        dup2(in_pipe[0], STDIN_FILENO);
        dup2(out_pipe[1], STDOUT_FILENO);
        if (quiet && freopen("/dev/null", "w", stderr) == NULL) {
            _exit(126);
        }
        close(in_pipe[0]);
        close(in_pipe[1]);
        close(out_pipe[0]);
        close(out_pipe[1]);
        execv(s_binary, argv);
        perror("execv");
        _exit(127);
    }
    close(in_pipe[0]);
    close(out_pipe[1]);
    s_to_dev = in_pipe[1];
    s_from_dev = out_pipe[0];
    s_rlen = 0;
    return 0;
}

/* Waits for the child to exit; returns its exit status or -1. */
static int
reap_device(int timeout_ms)
{
    int status = 0;
    const int64_t until = now_ms() + timeout_ms;

    if (s_to_dev >= 0) {
        close(s_to_dev);
        s_to_dev = -1;
    }
    for (;;) {
        const pid_t p = waitpid(s_child, &status, WNOHANG);
        if (p == s_child) {
            break;
        }
        if (now_ms() > until) {
            kill(s_child, SIGKILL);
            waitpid(s_child, &status, 0);
            s_child = -1;
            return -1;
        }
        struct timespec ts = { 0, 10 * 1000000 };
        nanosleep(&ts, NULL);
    }
    s_child = -1;
    if (s_from_dev >= 0) {
        close(s_from_dev);
        s_from_dev = -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Next line from the device (without newline), or NULL on timeout/EOF.
 * Valid until the next call. */
static char *
read_line(int timeout_ms)
{
    static char *line;
    static size_t line_cap;
    const int64_t until = now_ms() + timeout_ms;

    for (;;) {
        char *nl = s_rlen > 0 ? memchr(s_rbuf, '\n', s_rlen) : NULL;
        if (nl != NULL) {
            const size_t n = (size_t)(nl - s_rbuf);
            if (n + 1 > line_cap) {
                line_cap = n + 1;
                line = realloc(line, line_cap);
                if (line == NULL) {
                    return NULL;
                }
            }
            memcpy(line, s_rbuf, n);
            line[n] = '\0';
            memmove(s_rbuf, nl + 1, s_rlen - n - 1);
            s_rlen -= n + 1;
            return line;
        }
        const int64_t left = until - now_ms();
        if (left <= 0) {
            return NULL;
        }
        struct pollfd pfd = { .fd = s_from_dev, .events = POLLIN };
        const int r = poll(&pfd, 1, (int)left);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return NULL;
        }
        if (s_rcap - s_rlen < 65536) {
            s_rcap = s_rcap ? s_rcap * 2 : 1 << 20;
            char *grown = realloc(s_rbuf, s_rcap);
            if (grown == NULL) {
                return NULL;
            }
            s_rbuf = grown;
        }
        const ssize_t n = read(s_from_dev, s_rbuf + s_rlen, s_rcap - s_rlen);
        if (n <= 0) {
            return NULL;
        }
        s_rlen += (size_t)n;
    }
}

static void
event_add(const char *line)
{
    if (getenv("SMOKE_VERBOSE") != NULL) {
        printf("    < %.150s\n", line);
    }
    if (s_event_count < MAX_EVENTS) {
        snprintf(s_events[s_event_count++], EVENT_LEN, "%s", line);
    }
}

static void
events_clear(void)
{
    s_event_count = 0;
}

/* Index of the first event starting with prefix, or -1. */
static int
event_find(const char *prefix)
{
    for (int i = 0; i < s_event_count; i++) {
        if (strncmp(s_events[i], prefix, strlen(prefix)) == 0) {
            return i;
        }
    }
    return -1;
}

/* Waits for an event starting with prefix. */
static int
event_wait(const char *prefix, int timeout_ms)
{
    const int64_t until = now_ms() + timeout_ms;
    for (;;) {
        const int i = event_find(prefix);
        if (i >= 0) {
            return i;
        }
        const int64_t left = until - now_ms();
        if (left <= 0) {
            return -1;
        }
        const char *line = read_line((int)left);
        if (line == NULL) {
            return -1;
        }
        event_add(line);
    }
}

/* Sends one request; returns its id. */
static unsigned send_request(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static unsigned
send_request(const char *fmt, ...)
{
    static char buf[16384];
    va_list ap;
    const unsigned id = s_next_id++;

    int n = snprintf(buf, sizeof(buf), "%u ", id);
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    buf[n++] = '\n';
    for (int off = 0; off < n;) {
        const ssize_t w = write(s_to_dev, buf + off, (size_t)(n - off));
        if (w <= 0) {
            break;
        }
        off += (int)w;
    }
    return id;
}

/* Waits for the reply to id; returns what follows "<id> " (e.g. "ok 247")
 * or NULL on timeout. Other lines become events. */
static const char *
wait_reply(unsigned id)
{
    char prefix[24];
    const int n = snprintf(prefix, sizeof(prefix), "%u ", id);

    for (;;) {
        const char *line = read_line(REPLY_TIMEOUT_MS);
        if (line == NULL) {
            return NULL;
        }
        if (strncmp(line, prefix, (size_t)n) == 0) {
            return line + n;
        }
        event_add(line);
    }
}

/* Sends a request and returns its reply ("" on timeout). */
static const char *request(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *
request(const char *fmt, ...)
{
    static char line[16384];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    const char *reply = wait_reply(send_request("%s", line));
    return reply == NULL ? "" : reply;
}

static void
to_hex(const uint8_t *data, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++) {
        snprintf(out + 2 * i, 3, "%02x", data[i]);
    }
    if (len == 0) {
        strcpy(out, "-");
    }
}

#define CHECK_STR(actual, expected) \
    do { \
        const char *a_ = (actual); \
        if (strcmp(a_, (expected)) != 0) { \
            test_failf(__FILE__, __LINE__, "got '%.120s', expected '%s'", a_, (expected)); \
            return; \
        } \
    } while (0)

static const char *const CTRL = BLE_OTA_CONTROL_UUID;
static const char *const DATA = BLE_OTA_DATA_UUID;
static const char *const INFO = BLE_OTA_INFO_UUID;
static const char *const CMD = BLE_OTA_COMMAND_UUID;
static const char *const STREAM = BLE_OTA_STREAM_UUID;

/* --- scenario ----------------------------------------------------------------- */

/* The GATT table as docs/PROTOCOL.md (The service) gives it, in the order
 * the device announces it: the firmware's table (ble_ota_gatt.h) must say
 * the same. */
static const char *const k_gatt_lines[] = {
    "svc d6f1d96d-594c-4c53-b1c6-144a1dfde6d8",
    "chr d6f1d96d-594c-4c53-b1c6-144a1dfde6d8 7ad671aa-21c0-46a4-b722-270e3ae3d830 read,write,notify",
    "chr d6f1d96d-594c-4c53-b1c6-144a1dfde6d8 23408888-1f40-4cd8-9b89-ca8d45f8a5b0 write",
    "chr d6f1d96d-594c-4c53-b1c6-144a1dfde6d8 c771fa01-c1a5-46d6-8529-795dac415ff6 read",
    "chr d6f1d96d-594c-4c53-b1c6-144a1dfde6d8 c771fa02-c1a5-46d6-8529-795dac415ff6 write,notify",
    "chr d6f1d96d-594c-4c53-b1c6-144a1dfde6d8 c771fa03-c1a5-46d6-8529-795dac415ff6 write-without-response,write",
    "svc 180a",
    "chr 180a 2a29 read",
    "chr 180a 2a24 read",
    "chr 180a 2a26 read",
};
#define GATT_LINES (sizeof(k_gatt_lines) / sizeof(k_gatt_lines[0]))

static void
smoke_startup(void)
{
    CHECK(spawn_device(NULL, false) == 0);
    const char *line;
    size_t gatt = 0;
    bool dev = false, adv = false;
    while ((line = read_line(REPLY_TIMEOUT_MS)) != NULL && strcmp(line, "ready") != 0) {
        if (strncmp(line, "dev ", 4) == 0) {
            CHECK_STR(line, "dev 24:0a:c4:00:00:01 smoke 517");
            dev = true;
        } else if (strncmp(line, "adv ", 4) == 0) {
            CHECK_STR(line + 4, BLE_OTA_SERVICE_UUID);
            adv = true;
        } else if (strncmp(line, "svc ", 4) == 0 || strncmp(line, "chr ", 4) == 0) {
            CHECK(gatt < GATT_LINES);
            CHECK_STR(line, k_gatt_lines[gatt]);
            gatt++;
        }
    }
    CHECK(line != NULL);
    CHECK(dev && adv);
    CHECK_EQ(gatt, GATT_LINES);
    CHECK_STR(request("state"), "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=empty:0 transfer=idle confirm=0");
}

/* The table's UUIDs in the byte order of the air, as NimBLE's
 * BLE_UUID128_INIT takes them: the string read backwards byte by byte. */
static void
smoke_gatt_uuids(void)
{
    static const uint8_t service[16] = { 0xd8, 0xe6, 0xfd, 0x1d, 0x4a, 0x14, 0xc6, 0xb1,
                                         0x53, 0x4c, 0x4c, 0x59, 0x6d, 0xd9, 0xf1, 0xd6 };
    static const uint8_t stream[16] = { 0xf6, 0x5f, 0x41, 0xac, 0x5d, 0x79, 0x29, 0x85,
                                        0xd6, 0x46, 0xa5, 0xc1, 0x03, 0xfa, 0x71, 0xc7 };
    uint8_t out[BLE_OTA_UUID_MAX_LEN];

    CHECK_EQ(ble_ota_uuid_parse(ble_ota_gatt_svc_uuid[BLE_OTA_SVC_OTA], out), 16);
    CHECK(memcmp(out, service, 16) == 0);
    CHECK_EQ(ble_ota_uuid_parse(ble_ota_gatt_chrs[BLE_OTA_CHR_STREAM].uuid, out), 16);
    CHECK(memcmp(out, stream, 16) == 0);
    CHECK_EQ(ble_ota_uuid_parse(ble_ota_gatt_svc_uuid[BLE_OTA_SVC_DEVICE_INFORMATION], out), 2);
    CHECK_EQ(out[0], 0x0a);
    CHECK_EQ(out[1], 0x18);
    /* Every UUID of the table parses. */
    for (int i = 0; i < BLE_OTA_CHR_COUNT; i++) {
        CHECK(ble_ota_uuid_parse(ble_ota_gatt_chrs[i].uuid, out) != 0);
    }
    /* Anything else is refused. */
    static const char *const bad[] = {
        "",
        "180",
        "18a0a",
        "180g",
        "d6f1d96d594c4c53b1c6144a1dfde6d8",
        "d6f1d96d-594c-4c53-b1c6-144a1dfde6d",
        "d6f1d96d-594c-4c53-b1c6+144a1dfde6d8",
        "d6f1d96d-594c-4c53-b1c6-144a1dfde6dx",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_EQ(ble_ota_uuid_parse(bad[i], out), 0);
    }
    CHECK_EQ(ble_ota_uuid_parse(NULL, out), 0);
}

static void
smoke_gatt_basics(void)
{
    CHECK_STR(request("read 2a26"), "err 0e"); /* not connected */
    CHECK_STR(request("connect 600"), "ok 517");
    CHECK_STR(request("disconnect"), "ok");
    CHECK_STR(request("connect 247"), "ok 247");
    CHECK_STR(request("connect 247"), "err 0e");                                  /* one central at a time */
    CHECK_STR(request("read 2a29"), "ok 45737072657373696620287669727475616c29"); /* Espressif (virtual) */
    CHECK_STR(request("read 2a24"), "ok 4553503332");                             /* ESP32 */
    CHECK_STR(request("read 2a26"), "ok 312e302e30");                             /* 1.0.0 */
    CHECK_STR(request("read 00002A26-0000-1000-8000-00805F9B34FB"), "ok 312e302e30");
    CHECK_STR(request("read %s", CTRL), "ok 00");
    CHECK_STR(request("read %s", DATA), "err 02");
    CHECK_STR(request("read 2a00"), "err 0a");
    CHECK_STR(request("write 2a26 00"), "err 03");
    /* Read and write permissions follow the table's properties, as NimBLE's do. */
    CHECK_STR(request("write %s 00", INFO), "err 03");
    CHECK_STR(request("read %s", CMD), "err 02");
    CHECK_STR(request("read %s", STREAM), "err 02");
    CHECK_STR(request("write %s 0102", CTRL), "err 0d");
    CHECK_STR(request("write %s 09", CTRL), "err 82");
    CHECK_STR(request("write %s -", CTRL), "err 0d");
    CHECK_STR(request("write %s 0000", DATA), "err 82");     /* packet size 0 */
    CHECK_STR(request("write %s e9000000", DATA), "err 80"); /* data before REQUEST */
    static char huge[2 * 5000 + 1];
    memset(huge, 'e', sizeof(huge) - 1);
    CHECK_STR(request("write %s %s", DATA, huge), "err 0d"); /* beyond any MTU */
    CHECK_STR(request("subscribe 2a26 1"), "err 0a");
    /* Not subscribed: REQUEST is answered, but no notification goes out. */
    events_clear();
    CHECK_STR(request("write %s 01", CTRL), "ok");
    CHECK_EQ(event_find("notify"), -1);
    CHECK_STR(request("read %s", CTRL), "ok 02");
    CHECK_STR(request("disconnect"), "ok");
    CHECK_STR(request("state"), "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=empty:0 transfer=idle confirm=0");
}

static void
smoke_malformed(void)
{
    events_clear();
    CHECK_STR(request("frobnicate"), "err 0e");
    CHECK_STR(request("write %s zz", CTRL), "err 0e");
    CHECK_STR(request("write %s 012", CTRL), "err 0e");
    CHECK_STR(request("flash-read ota_2 0 4"), "err 0e");
    CHECK_STR(request("flash-read ota_0 0 99999999"), "err 0e");
    CHECK_STR(request("connect x"), "err 0e");
    CHECK_STR(request("state  extra"), "err 0e");
    const char junk[] = "no id here\n\n\r\n-5 state\n";
    CHECK(write(s_to_dev, junk, sizeof(junk) - 1) == (ssize_t)(sizeof(junk) - 1));
    /* An overlong line is answered with its id. */
    static char big[40000];
    const unsigned id = s_next_id++;
    int n = snprintf(big, sizeof(big), "%u write %s ", id, DATA);
    memset(big + n, 'a', sizeof(big) - (size_t)n - 2);
    big[sizeof(big) - 2] = '\n';
    big[sizeof(big) - 1] = '\0';
    CHECK(write(s_to_dev, big, strlen(big)) == (ssize_t)strlen(big));
    const char *reply = wait_reply(id);
    CHECK(reply != NULL);
    CHECK_STR(reply, "err 0e");
    CHECK(event_find("log E malformed request: no id here") >= 0);
    CHECK_STR(request("state"), "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=empty:0 transfer=idle confirm=0");
}

static void
smoke_update(void)
{
    char hex[2 * BLE_OTA_MAX_PACKET + 1];
    const host_image_spec_t spec = {
        .project = "virtual-esp32",
        .version = "2.0.0",
        .payload_len = 60001,
        .seed = 42,
        .chip_id = HOST_IMAGE_CHIP_ESP32,
        .hash_appended = true,
    };
    s_image_len = host_image_build(&spec, s_image, sizeof(s_image));
    CHECK(s_image_len > 0);

    CHECK_STR(request("connect 517"), "ok 517");
    CHECK_STR(request("subscribe %s 1", CTRL), "ok");
    CHECK_STR(request("write %s 0202", DATA), "ok"); /* packet size 514 */
    events_clear();
    CHECK_STR(request("write %s 01", CTRL), "ok");
    /* The notification comes before the reply. */
    CHECK(event_find("notify 7ad671aa-21c0-46a4-b722-270e3ae3d830 02") >= 0);
    CHECK_STR(request("read %s", CTRL), "ok 02");
    for (size_t off = 0; off < s_image_len; off += BLE_OTA_MAX_PACKET) {
        const size_t n = s_image_len - off < BLE_OTA_MAX_PACKET ? s_image_len - off : BLE_OTA_MAX_PACKET;
        to_hex(s_image + off, n, hex);
        const char *reply = request("write %s %s", DATA, hex);
        if (strcmp(reply, "ok") != 0) {
            test_failf(__FILE__, __LINE__, "packet at %zu: %s", off, reply);
            return;
        }
    }
    CHECK_STR(request("state"),
              "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=empty:0 transfer=receiving confirm=0");
    events_clear();
    const int64_t done_at = now_ms();
    CHECK_STR(request("write %s 04", CTRL), "ok");
    CHECK(event_find("notify 7ad671aa-21c0-46a4-b722-270e3ae3d830 05") >= 0);
    char expect[160];
    snprintf(expect, sizeof(expect),
             "ok running=ota_0 boot=ota_1 ota_0=valid:8528 ota_1=new:%zu transfer=restarting confirm=0", s_image_len);
    CHECK_STR(request("state"), expect);
    CHECK_STR(request("write %s 00", DATA), "err 83");
    CHECK_STR(request("write %s 01", CTRL), "err 83");

    /* The restart runs in real time, after the delay. */
    CHECK(event_wait("disconnected 16", 3000) >= 0);
    const int64_t elapsed = now_ms() - done_at;
    CHECK(elapsed >= RESTART_DELAY_MS - 5);
    CHECK(event_wait("boot ota_1 pending-verify", 1000) > event_find("disconnected 16"));
    CHECK(event_wait("log I boot: new image confirmed", 1000) >= 0);
    snprintf(expect, sizeof(expect),
             "ok running=ota_1 boot=ota_1 ota_0=valid:8528 ota_1=valid:%zu transfer=idle confirm=0", s_image_len);
    CHECK_STR(request("state"), expect);
    CHECK_STR(request("read 2a26"), "err 0e"); /* the restart dropped the link */
}

static void
smoke_after_update(void)
{
    static char hex[2 * sizeof(s_image) + 1];
    char expect[160];

    CHECK_STR(request("connect 185"), "ok 185");
    CHECK_STR(request("read 2a26"), "ok 322e302e30"); /* 2.0.0 */
    /* Flash holds exactly the image: the last packet was not padded. */
    to_hex(s_image, s_image_len, hex);
    const char *reply = request("flash-read ota_1 0 %zu", s_image_len + 16);
    CHECK(strncmp(reply, "ok ", 3) == 0);
    CHECK(strncmp(reply + 3, hex, 2 * s_image_len) == 0);
    CHECK_STR(reply + 3 + 2 * s_image_len, "ffffffffffffffffffffffffffffffff");
    CHECK_STR(request("flash-read ota_1 0 0"), "ok -");

    /* A transfer cut by a disconnect leaves the other slot empty. */
    CHECK_STR(request("write %s b600", DATA), "ok"); /* packet size 182 */
    CHECK_STR(request("write %s 01", CTRL), "ok");
    to_hex(s_image, 182, hex);
    for (int i = 0; i < 3; i++) {
        CHECK_STR(request("write %s %s", DATA, hex), "ok");
    }
    to_hex(s_image, 513, hex);
    CHECK_STR(request("write %s %s", DATA, hex), "err 0d"); /* over 512, even as a long write */
    CHECK_STR(request("disconnect"), "ok");
    snprintf(expect, sizeof(expect),
             "ok running=ota_1 boot=ota_1 ota_0=empty:0 ota_1=valid:%zu transfer=idle confirm=0", s_image_len);
    CHECK_STR(request("state"), expect);
    CHECK_STR(request("connect 517"), "ok 517");
    CHECK_STR(request("read %s", CTRL), "ok 00");
    events_clear();
    CHECK_STR(request("power-cycle"), "ok");
    CHECK(event_find("disconnected 08") >= 0);
    CHECK(event_find("boot ota_1 valid") >= 0);
    CHECK_STR(request("state"), expect);
}

static uint32_t
rnd(void)
{
    static uint32_t x = 12345;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

/* Thousands of random, mostly malformed requests: every one with an id
 * gets a reply, and the device stays sane (the sanitizer build checks the
 * rest). */
static void
smoke_random_requests(void)
{
    static const char *const cmds[] = {
        "connect",     "disconnect", "read", "write", "write-cmd", "subscribe", "state",     "flash-read",
        "power-cycle", "bogus",      "",     "WRITE", "stats",     "write",     "write-cmd",
    };
    static const char *const words[] = {
        BLE_OTA_CONTROL_UUID,
        BLE_OTA_DATA_UUID,
        BLE_OTA_INFO_UUID,
        BLE_OTA_COMMAND_UUID,
        BLE_OTA_STREAM_UUID,
        BLE_OTA_COMMAND_UUID,
        BLE_OTA_STREAM_UUID,
        "02",
        "03",
        "05",
        "2a26",
        "2a29",
        "180a",
        "ota_0",
        "ota_1",
        "0",
        "1",
        "23",
        "517",
        "4294967296",
        "-1",
        "abc",
        "-",
        "01",
        "04",
        "0202",
        "e9",
        "zz",
        "7ad671aa21c046a4b722270e3ae3d830",
        "00002a2600001000800000805f9b34fb",
        "\r",
    };
    static char line[3000];

    CHECK(spawn_device(NULL, false) == 0);
    CHECK(event_wait("ready", REPLY_TIMEOUT_MS) >= 0);
    for (int i = 0; i < 3000; i++) {
        const unsigned id = s_next_id++;
        int n = snprintf(line, sizeof(line), "%u %s", id, cmds[rnd() % (sizeof(cmds) / sizeof(cmds[0]))]);
        const int nargs = (int)(rnd() % 5);
        for (int a = 0; a < nargs; a++) {
            if (rnd() % 4 == 0) {
                /* random hex, sometimes odd-length or with a bad digit */
                const int len = (int)(rnd() % 1200);
                line[n++] = ' ';
                for (int k = 0; k < len && n < (int)sizeof(line) - 8; k++) {
                    line[n++] = "0123456789abcdefg"[rnd() % (k == 0 ? 17 : 16)];
                }
                line[n] = '\0';
            } else {
                const char *sep = rnd() % 20 ? " " : "  ";
                n += snprintf(line + n, sizeof(line) - (size_t)n, "%s%s", sep,
                              words[rnd() % (sizeof(words) / sizeof(words[0]))]);
            }
        }
        line[n++] = '\n';
        if (write(s_to_dev, line, (size_t)n) != n) {
            test_failf(__FILE__, __LINE__, "device gone at request %d", i);
            return;
        }
        if (wait_reply(id) == NULL) {
            test_failf(__FILE__, __LINE__, "no reply to: %.100s", line);
            return;
        }
        events_clear();
    }
    const char *state = request("state");
    CHECK(strncmp(state, "ok running=ota_", 15) == 0);
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);
}


/* --- protocol v2 ------------------------------------------------------------------ */

/* Start-up lines up to `ready`: how many of each kind. */
static bool
read_startup(int *advs, int *svcs, int *chrs)
{
    const char *line;

    *advs = *svcs = *chrs = 0;
    while ((line = read_line(REPLY_TIMEOUT_MS)) != NULL && strcmp(line, "ready") != 0) {
        *advs += strncmp(line, "adv ", 4) == 0;
        *svcs += strncmp(line, "svc ", 4) == 0;
        *chrs += strncmp(line, "chr ", 4) == 0;
    }
    return line != NULL;
}

/* The value of the last `notify <cmd-uuid> <hex>` event starting with
 * hex_prefix, or NULL. */
static const char *
cmd_notify(const char *hex_prefix)
{
    char prefix[120];
    snprintf(prefix, sizeof(prefix), "notify %s %s", CMD, hex_prefix);
    for (int i = s_event_count - 1; i >= 0; i--) {
        if (strncmp(s_events[i], prefix, strlen(prefix)) == 0) {
            return s_events[i] + strlen("notify ") + strlen(CMD) + 1;
        }
    }
    return NULL;
}

static int
count_events(const char *prefix)
{
    int n = 0;
    for (int i = 0; i < s_event_count; i++) {
        n += strncmp(s_events[i], prefix, strlen(prefix)) == 0;
    }
    return n;
}

static void
begin_hex(const uint8_t *img, size_t len, uint16_t flags, char out[2 * BLE_OTA_BEGIN_SIZE + 1])
{
    uint8_t req[BLE_OTA_BEGIN_SIZE] = { BLE_OTA_CMD_BEGIN };
    ble_ota_put_le32(req + 1, (uint32_t)len);
    ble_ota_sha256(img, len, req + 5);
    ble_ota_put_le16(req + 39, flags);
    to_hex(req, sizeof(req), out);
}

/* Streams img[from..to) as Write Commands of chunk data bytes each. */
typedef struct {
    unsigned long packets;
    unsigned long bytes; /* headers included */
} sent_t;

static bool
stream_hex(const uint8_t *img, size_t from, size_t to, size_t chunk, sent_t *sent)
{
    static char hex[2 * (BLE_OTA_STREAM_HEADER + BLE_OTA_MAX_PACKET) + 1];
    uint8_t pkt[BLE_OTA_STREAM_HEADER + BLE_OTA_MAX_PACKET];

    for (size_t off = from; off < to; off += chunk) {
        const size_t n = to - off < chunk ? to - off : chunk;
        ble_ota_put_le32(pkt, (uint32_t)off);
        memcpy(pkt + BLE_OTA_STREAM_HEADER, img + off, n);
        to_hex(pkt, BLE_OTA_STREAM_HEADER + n, hex);
        if (strcmp(request("write-cmd %s %s", STREAM, hex), "ok") != 0) {
            return false;
        }
        sent->packets++;
        sent->bytes += BLE_OTA_STREAM_HEADER + n;
    }
    return true;
}

/* A scripted v2 session: Info, BEGIN, a stream cut by a disconnect and
 * resumed, END, RESTART, the new image confirmed; stats of the air traffic. */
static void
smoke_v2_session(void)
{
    char begin[2 * BLE_OTA_BEGIN_SIZE + 1], expect[200];
    const host_image_spec_t spec = {
        .project = "smoke-v2",
        .version = "2.5.0",
        .payload_len = 50001,
        .seed = 7,
        .hash_appended = true,
    };
    char *args[] = { "--window", "4096", NULL };
    int advs, svcs, chrs;
    sent_t sent = { 0, 0 };

    s_image_len = host_image_build(&spec, s_image, sizeof(s_image));
    CHECK(spawn_device(args, false) == 0);
    CHECK(read_startup(&advs, &svcs, &chrs));
    CHECK_EQ(advs, 1);
    CHECK_EQ(svcs, 2);
    CHECK_EQ(chrs, 8);

    CHECK_STR(request("connect 247"), "ok 247");
    const char *info = request("read %s", INFO);
    CHECK(strncmp(info, "ok ", 3) == 0);
    info += 3;
    CHECK_EQ(strlen(info), 2 * BLE_OTA_INFO_SIZE);
    /* info_version 4, protocol 2, features RESUME|CLIENT_CONFIRM|SEED|DEFLATE|DELTA,
     * chip 0, revision 300, slot 0x1E0000, max_packet 514, window 4096,
     * valid, no attempt yet, idle, offset 0. */
    CHECK(strncmp(info,
                  "04024f0000002c010000"
                  "1e00"
                  "0202"
                  "0010"
                  "00ff0000"
                  "00000000",
                  48) == 0);
    /* The device id: its address (the default --device-id). */
    CHECK(strncmp(info + 2 * BLE_OTA_INFO_OFF_DEVICE_ID, "240ac4000001", 12) == 0);
    CHECK(strncmp(info + 2 * 60, "312e302e3000", 12) == 0); /* 1.0.0 */

    /* Not subscribed: BEGIN is carried out, its answer goes nowhere. */
    begin_hex(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM, begin);
    events_clear();
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK_EQ(event_find("notify"), -1);
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK(cmd_notify("810000000000") != NULL); /* OK, offset 0 */
    CHECK_STR(cmd_notify("81"), "8100000000000010"
                                "0202");
    CHECK_STR(request("write %s -", CMD), "err 0d");

    /* Half the image, ACKed once window/8 = 512 bytes arrived since the
     * last ACK (every 3 packets of 240), then the link drops. */
    events_clear();
    CHECK(stream_hex(s_image, 0, 120 * 240, 240, &sent));
    CHECK_EQ(count_events("notify c771fa02-c1a5-46d6-8529-795dac415ff6 c0"), 40);
    CHECK_STR(cmd_notify("c0"), "c080700000"); /* 28800 */
    CHECK_STR(request("disconnect"), "ok");
    CHECK_STR(request("state"),
              "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=empty:0 transfer=suspended confirm=0");

    /* Reconnect: the same BEGIN resumes where the data stopped. */
    CHECK_STR(request("connect 517"), "ok 517");
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    events_clear();
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK_STR(cmd_notify("81"), "8100807000000010"
                                "0202"); /* offset 28800 */
    /* A gap: one RESYNC, however many packets follow it. */
    events_clear();
    CHECK(stream_hex(s_image, 28800 + 510, 28800 + 4 * 510, 510, &sent));
    CHECK_EQ(count_events("notify"), 1);
    CHECK_STR(cmd_notify("c1"), "c180700000");
    CHECK(stream_hex(s_image, 28800, s_image_len, 510, &sent));
    snprintf(expect, sizeof(expect), "c0%02x%02x%02x00", (unsigned)(s_image_len & 0xFF),
             (unsigned)(s_image_len >> 8 & 0xFF), (unsigned)(s_image_len >> 16));
    CHECK_STR(cmd_notify("c0"), expect);

    events_clear();
    CHECK_STR(request("write %s 02", CMD), "ok");
    CHECK_STR(cmd_notify("82"), "8200");
    /* Valid and not selected: only RESTART selects it. */
    snprintf(expect, sizeof(expect),
             "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=new:%zu transfer=complete confirm=0", s_image_len);
    CHECK_STR(request("state"), expect);
    events_clear();
    CHECK_STR(request("write %s 03", CMD), "ok");
    CHECK_STR(cmd_notify("83"), "8300");
    CHECK_STR(request("write %s 01", CTRL), "err 83"); /* a restart is pending */
    CHECK(event_wait("disconnected 16", 3000) >= 0);
    CHECK(event_wait("boot ota_1 pending-verify", 1000) >= 0);
    CHECK(event_wait("log I boot: new image waits for a client's CONFIRM", 1000) >= 0);
    snprintf(expect, sizeof(expect),
             "ok running=ota_1 boot=ota_1 ota_0=valid:8528 ota_1=pending-verify:%zu transfer=idle confirm=1",
             s_image_len);
    CHECK_STR(request("state"), expect);

    /* After the restart: Info shows the new version pending verify; CONFIRM. */
    CHECK_STR(request("connect 247"), "ok 247");
    info = request("read %s", INFO);
    CHECK(strncmp(info + 3 + 2 * 16, "01ff00", 6) == 0);        /* pending verify, no attempt since boot, idle */
    CHECK(strncmp(info + 3 + 2 * 60, "322e352e3000", 12) == 0); /* 2.5.0 */
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    events_clear();
    CHECK_STR(request("write %s 05", CMD), "ok");
    CHECK_STR(cmd_notify("85"), "8500");
    CHECK_STR(request("write %s 05", CMD), "ok");
    CHECK_STR(cmd_notify("85"), "850c"); /* NOT_PENDING */
    snprintf(expect, sizeof(expect),
             "ok running=ota_1 boot=ota_1 ota_0=valid:8528 ota_1=valid:%zu transfer=idle confirm=0", s_image_len);
    CHECK_STR(request("state"), expect);
    CHECK_STR(request("read 2a26"), "ok 322e352e30");

    /* The air traffic: 2 Info reads and 1 DIS read; Write Requests: 3 BEGIN,
     * the empty one, END, RESTART, 2 CONFIRM, 3 CCCD writes, 1 to Control. */
    const char *stats = request("stats");
    unsigned long writes, cmds, reads, notifies, bytes;
    CHECK_EQ(sscanf(stats, "ok writes=%lu write-cmds=%lu reads=%lu notifies=%lu stream-bytes=%lu", &writes, &cmds,
                    &reads, &notifies, &bytes),
             5);
    CHECK_EQ(reads, 3);
    CHECK_EQ(writes, 3 + 1 + 1 + 1 + 2 + 3 + 1);
    CHECK_EQ(cmds, sent.packets);
    CHECK_EQ(bytes, sent.bytes);
    CHECK(notifies >= 24 + 4);
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);
}


/* `fault`: requests lost on air, notifications lost, a flash write that
 * fails, and power cut during a flash operation; the old image boots. */
static void
smoke_faults(void)
{
    char begin[2 * BLE_OTA_BEGIN_SIZE + 1];
    const host_image_spec_t spec = {
        .project = "smoke-fault",
        .version = "3.0.0",
        .payload_len = 20000,
        .seed = 9,
        .hash_appended = true,
    };
    char *args[] = { "--window", "4096", NULL };
    int advs, svcs, chrs;
    sent_t sent = { 0, 0 };

    s_image_len = host_image_build(&spec, s_image, sizeof(s_image));
    CHECK(spawn_device(args, false) == 0);
    CHECK(read_startup(&advs, &svcs, &chrs));
    CHECK_STR(request("fault"), "err 0e");
    CHECK_STR(request("fault no-answer notify 1"), "err 0e");
    CHECK_STR(request("fault drop-notify x"), "err 0e");

    /* Bit rot: a bit of a slot flips under the firmware, and back; no slot or offset outside it refused. */
    CHECK_STR(request("fault bit-rot ota_0 0"), "ok");
    CHECK_STR(request("flash-read ota_0 0 1"), "ok e8");
    CHECK_STR(request("fault bit-rot ota_0 0"), "ok");
    CHECK_STR(request("flash-read ota_0 0 1"), "ok e9");
    CHECK_STR(request("fault bit-rot ota_2 0"), "err 0e");
    CHECK_STR(request("fault bit-rot ota_0 99999999"), "err 0e");

    /* A connect lost on air: the device never saw it. */
    CHECK_STR(request("fault no-answer connect 1"), "ok");
    CHECK_STR(request("connect 247"), "lost");
    CHECK_STR(request("read %s", INFO), "err 0e");
    CHECK_STR(request("connect 517"), "ok 517");
    CHECK_STR(request("fault no-answer read 2"), "ok");
    CHECK_STR(request("read %s", INFO), "lost");
    CHECK_STR(request("read 2a29"), "lost");
    CHECK(strncmp(request("read 2a29"), "ok ", 3) == 0);
    CHECK_STR(request("subscribe %s 1", CMD), "ok");

    /* BEGIN's answer lost; the next BEGIN (same image) is answered. */
    begin_hex(s_image, s_image_len, 0, begin);
    CHECK_STR(request("fault drop-notify 1"), "ok");
    events_clear();
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK_EQ(event_find("notify"), -1);
    CHECK(event_find("log W fault: notification lost") >= 0);
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK(cmd_notify("810000000000") != NULL);

    /* The second flash write fails: FAILED FLASH_ERROR at the second block. */
    CHECK_STR(request("fault flash-write-fail 2"), "ok");
    events_clear();
    CHECK(stream_hex(s_image, 0, 3 * 4096, 500, &sent));
    CHECK(cmd_notify("c2") != NULL);
    CHECK_STR(cmd_notify("c2"), "c208401f0000"); /* FLASH_ERROR at the packet at 8000 */
    CHECK_STR(request("state"), "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=empty:0 transfer=idle confirm=0");

    /* Power cut at the third flash operation (erases at BEGIN count): the
     * request that caused it is never answered, the link drops, the device boots. */
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK_STR(request("fault power-loss-after 1"), "ok");
    events_clear();
    CHECK(stream_hex(s_image, 0, 4096 - 256, 256, &sent));
    CHECK_STR(request("write-cmd %s %s", STREAM,
                      "00000e00"
                      "00"),
              "ok"); /* a gap: no flash operation */
    char pkt[2 * (4 + 256) + 1];
    uint8_t raw[4 + 256];
    raw[0] = 0x00;
    raw[1] = 0x0f; /* offset 3840 */
    raw[2] = 0;
    raw[3] = 0;
    memcpy(raw + 4, s_image + 4096 - 256, 256);
    to_hex(raw, sizeof(raw), pkt);
    CHECK_STR(request("write %s %s", STREAM, pkt), "lost");
    CHECK(event_wait("log W fault: power lost during a flash operation", 1000) >= 0);
    CHECK(event_wait("disconnected 08", 1000) >= 0);
    CHECK(event_wait("boot ota_0 valid", 1000) >= 0);
    CHECK_STR(request("state"), "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=empty:0 transfer=idle confirm=0");
    CHECK_STR(request("faults"), "ok hit=8"); /* two bit flips, six faults on air and flash */
    CHECK_STR(request("fault clear"), "ok");
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);
}

/* The core's timers run in real time: the abandon timeout of a suspended
 * transfer, and the confirm window that rolls back an unconfirmed image.
 * The device's log and boots say what it did, in order, and each bound on
 * when is timed from before the request that started the timer: a busy
 * machine may stall this test past either timer, so a state read right
 * after the request could find the timer's work done already. */
static void
smoke_v2_timers(void)
{
    char begin[2 * BLE_OTA_BEGIN_SIZE + 1];
    char *abandon_args[] = { "--abandon-timeout-ms", "200", NULL };
    /* A device of its own: with a 200 ms abandon timeout, a complete image
     * whose RESTART comes later than that (a stalled test) is dropped. */
    char *confirm_args[] = { "--confirm-window-ms", "300", NULL };
    int advs, svcs, chrs;
    sent_t sent = { 0, 0 };

    CHECK(s_image_len > 0);
    CHECK(spawn_device(abandon_args, false) == 0);
    CHECK(read_startup(&advs, &svcs, &chrs));
    CHECK_STR(request("connect 517"), "ok 517");
    begin_hex(s_image, s_image_len, BLE_OTA_BEGIN_FLAG_CLIENT_CONFIRM, begin);
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK(stream_hex(s_image, 0, 10000, 510, &sent));
    events_clear();
    const int64_t dropped = now_ms();
    CHECK_STR(request("disconnect"), "ok");
    const int suspended = event_find("log I link lost: v2 transfer suspended at 10000 of ");
    CHECK(suspended >= 0);
    CHECK(event_wait("log W nobody resumed: v2 transfer aborted at 10000 of ", 2000) > suspended);
    CHECK(now_ms() - dropped >= 200 - 5);
    CHECK_STR(request("state"), "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=empty:0 transfer=idle confirm=0");
    /* Nothing kept: the same image begins at offset 0 again. */
    CHECK_STR(request("connect 517"), "ok 517");
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    events_clear();
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK_STR(cmd_notify("81"), "8100000000000080"
                                "0202"); /* offset 0, window 32 KB */
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);

    /* A whole update with CLIENT_CONFIRM, and nobody confirms. */
    CHECK(spawn_device(confirm_args, false) == 0);
    CHECK(read_startup(&advs, &svcs, &chrs));
    CHECK_STR(request("connect 517"), "ok 517");
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    events_clear();
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK_STR(cmd_notify("81"), "8100000000000080"
                                "0202");
    CHECK(stream_hex(s_image, 0, s_image_len, 510, &sent));
    CHECK_STR(request("write %s 02", CMD), "ok");
    const int64_t restart_asked = now_ms();
    CHECK_STR(request("write %s 03", CMD), "ok");
    CHECK_STR(cmd_notify("83"), "8300");
    const int booted = event_wait("boot ota_1 pending-verify", 3000);
    CHECK(booted >= 0);
    const int rolled_back = event_wait("log E no CONFIRM within 300 ms: rolling back", 3000);
    CHECK(rolled_back > booted);
    /* The window opens at the boot, which follows the restart delay. */
    CHECK(now_ms() - restart_asked >= RESTART_DELAY_MS + 300 - 5);
    CHECK(event_wait("boot ota_0 valid", 1000) > rolled_back);
    char expect[160];
    snprintf(expect, sizeof(expect),
             "ok running=ota_0 boot=ota_0 ota_0=valid:8528 ota_1=invalid:%zu transfer=idle confirm=0", s_image_len);
    CHECK_STR(request("state"), expect);
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);
}

/* Hex to bytes; false on a malformed value. */
static bool
from_hex(const char *hex, uint8_t *out, size_t cap, size_t *len)
{
    size_t n = 0;

    while (hex[0] != '\0' && hex[1] != '\0' && n < cap) {
        unsigned byte;
        if (sscanf(hex, "%2x", &byte) != 1) {
            return false;
        }
        out[n++] = (uint8_t)byte;
        hex += 2;
    }
    *len = n;
    return hex[0] == '\0';
}

/* Writes a file under /tmp; false on error. */
static bool
write_temp(char *path, const uint8_t *data, size_t len)
{
    const int fd = mkstemp(path);
    if (fd < 0) {
        return false;
    }
    const bool ok = write(fd, data, len) == (ssize_t)len;
    close(fd);
    return ok;
}

/* Writes a sealed request to OTA Command; the answer (hex of its value)
 * must come back with the session's MAC. */
static const char *
sealed_request(host_session_t *session, uint8_t *req, size_t len)
{
    static char hex[2 * (BLE_OTA_BEGIN_SIZE + BLE_OTA_AUTH_MAC_LEN) + 1];
    char prefix[3];
    uint8_t answer[96];
    size_t answer_len = 0;

    len = host_session_seal(session, req, len);
    to_hex(req, len, hex);
    events_clear();
    if (strcmp(request("write %s %s", CMD, hex), "ok") != 0) {
        return NULL;
    }
    snprintf(prefix, sizeof(prefix), "%02x", req[0] | BLE_OTA_ANSWER);
    const char *note = cmd_notify(prefix);
    if (note == NULL || !from_hex(note, answer, sizeof(answer), &answer_len) ||
        !host_session_answer_ok(session, answer, answer_len)) {
        return NULL;
    }
    return note;
}

/* A device as our firmware's default build leaves it: a provisioned key
 * (--key-partition, the file `esp32-ble-ota provision` writes) and signed
 * images only (--require-signature on, the first image signed by the
 * owner). The owner's session proves itself both ways; an unsigned image
 * is refused at END; a stranger's junk ends the stranger's link; a device
 * without a key takes nobody. */
static void
smoke_keyed_and_signed(void)
{
    static uint8_t first[16 * 1024];
    static uint8_t part[HOST_FLASH_KEY_PART_SIZE];
    static const uint8_t secret[BLE_OTA_AUTH_KEY_LEN] = { 's', 'e', 'c', 'r', 'e', 't' };
    static const uint8_t id[BLE_OTA_DEVICE_ID_LEN] = { 0x24, 0x0a, 0xc4, 0x00, 0x00, 0x01 };
    char image_path[] = "/tmp/smoke-image-XXXXXX";
    char key_path[] = "/tmp/smoke-key-XXXXXX";
    char begin[2 * BLE_OTA_BEGIN_SIZE + 1];
    uint8_t key[BLE_OTA_AUTH_KEY_LEN];
    int advs, svcs, chrs;
    sent_t sent = { 0, 0 };

    test_sign_key_t *owner = test_sign_key_new("ecdsa256");
    CHECK(owner != NULL);
    const host_image_spec_t spec = {
        .project = "virtual-esp32",
        .version = "1.0.0",
        .payload_len = 8192,
        .seed = 1,
        .hash_appended = true,
    };
    size_t len = host_image_build(&spec, first, sizeof(first));
    len = test_sign_image(owner, first, len, first, sizeof(first));
    test_sign_key_free(owner);
    host_session_device_key(secret, id, key);
    memset(part, 0xFF, sizeof(part));
    host_session_key_record(key, id, part);
    CHECK(len > 0 && write_temp(image_path, first, len) && write_temp(key_path, part, sizeof(part)));

    char *args[] = {
        "--image", image_path, "--key-partition", key_path, "--require-signature", "on", "--allow-unauthenticated",
        "off",     NULL
    };
    const int spawned = spawn_device(args, false);
    const bool started = spawned == 0 && read_startup(&advs, &svcs, &chrs);
    unlink(image_path); /* read at start-up: the device keeps its own flash */
    unlink(key_path);
    CHECK(started);
    CHECK_STR(request("connect 247"), "ok 247");
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    const char *info = request("read %s", INFO);
    /* RESUME | CLIENT_CONFIRM | DEFLATE | AUTH | SIGNED | DELTA; the seed protocol off. */
    CHECK(strncmp(info, "ok 04027b00", 11) == 0);

    /* The owner's session: HELLO, then requests whose answers prove the key. */
    host_session_t session;
    uint8_t hello[BLE_OTA_HELLO_SIZE];
    char hex[2 * BLE_OTA_HELLO_SIZE + 1];
    host_session_begin(&session, key, id, 1, hello);
    to_hex(hello, sizeof(hello), hex);
    events_clear();
    CHECK_STR(request("write %s %s", CMD, hex), "ok");
    uint8_t answer[64];
    size_t answer_len = 0;
    const char *note = cmd_notify("8600");
    CHECK(note != NULL && from_hex(note, answer, sizeof(answer), &answer_len));
    CHECK(host_session_hello_answer(&session, answer, answer_len));
    uint8_t req[BLE_OTA_BEGIN_SIZE + BLE_OTA_AUTH_MAC_LEN] = { BLE_OTA_CMD_INFO };
    CHECK(sealed_request(&session, req, 1) != NULL);

    /* An unsigned image goes through and is refused at END, never selected. */
    begin_hex(s_image, s_image_len, 0, begin);
    CHECK(from_hex(begin, req, sizeof(req), &answer_len) && answer_len == BLE_OTA_BEGIN_SIZE);
    CHECK(sealed_request(&session, req, BLE_OTA_BEGIN_SIZE) != NULL);
    CHECK(stream_hex(s_image, 0, s_image_len, 240, &sent));
    req[0] = BLE_OTA_CMD_END;
    note = sealed_request(&session, req, 1);
    CHECK(note != NULL && strncmp(note, "8213", 4) == 0); /* END: BAD_SIGNATURE */
    CHECK(strstr(request("state"), "ota_1=empty") != NULL);

    /* A stranger: three junk writes (the seed protocol is not served), and
     * the device ends the link (0x13). */
    CHECK_STR(request("disconnect"), "ok");
    CHECK_STR(request("connect 247"), "ok 247");
    events_clear();
    CHECK_STR(request("write %s 01", CTRL), "err 03");
    request("write %s 3e", CMD);
    request("write %s 02", CMD);
    CHECK(event_wait("disconnected 13", REPLY_TIMEOUT_MS) >= 0);
    /* The owner right after: a clean link. */
    CHECK_STR(request("connect 247"), "ok 247");
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    host_session_begin(&session, key, id, 2, hello);
    to_hex(hello, sizeof(hello), hex);
    events_clear();
    CHECK_STR(request("write %s %s", CMD, hex), "ok");
    CHECK(cmd_notify("8600") != NULL);
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);

    /* No key partition, no opt-out: nobody can update. */
    char *unprovisioned[] = { "--allow-unauthenticated", "off", NULL };
    CHECK(spawn_device(unprovisioned, false) == 0);
    CHECK(read_startup(&advs, &svcs, &chrs));
    CHECK_STR(request("connect 247"), "ok 247");
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    events_clear();
    CHECK_STR(request("write %s %s", CMD, hex), "ok");
    CHECK(cmd_notify("8612") != NULL); /* NOT_PROVISIONED */
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);
}

/* What the firmware's Bluetooth glue decides, run here as on the ESP32
 * (ble_ota_bt.h): a notification that finds no buffer is tried again, up
 * to 5 times, by the OTA task (protocol v2) and not by the host task (the
 * seed's); a name longer than the advertising data holds goes out shortened. */
static void
smoke_bt_glue(void)
{
    char *args[] = { "--name", "a-rather-long-device-name", NULL };
    char begin[2 * BLE_OTA_BEGIN_SIZE + 1];
    const char *line;
    bool dev = false;

    CHECK(s_image_len > 0);
    CHECK(spawn_device(args, false) == 0);
    while ((line = read_line(REPLY_TIMEOUT_MS)) != NULL && strcmp(line, "ready") != 0) {
        if (strncmp(line, "dev ", 4) == 0) {
            CHECK_STR(line, "dev 24:0a:c4:00:00:01 a-rather-long-device-na 517"); /* 23 bytes */
            dev = true;
        }
    }
    CHECK(line != NULL && dev);
    CHECK_STR(request("connect 517"), "ok 517");
    CHECK_STR(request("subscribe %s 1", CMD), "ok");
    begin_hex(s_image, s_image_len, 0, begin);

    /* Four attempts without a buffer: BEGIN's answer still goes out. */
    CHECK_STR(request("fault no-buffer 4"), "ok");
    events_clear();
    CHECK_STR(request("write %s %s", CMD, begin), "ok");
    CHECK(cmd_notify("8100") != NULL);
    CHECK_EQ(count_events("log W fault: no buffer"), 4);
    /* Five: the answer is lost, and the device says so. */
    CHECK_STR(request("fault no-buffer 5"), "ok");
    events_clear();
    CHECK_STR(request("write %s 04", CMD), "ok");
    CHECK(cmd_notify("84") == NULL);
    CHECK(event_find("log E notification failed: no buffer") >= 0);
    CHECK_STR(request("faults"), "ok hit=9"); /* every attempt counted */

    /* The seed's answers come from the host task: one attempt. */
    CHECK_STR(request("subscribe %s 1", CTRL), "ok");
    CHECK_STR(request("fault no-buffer 1"), "ok");
    events_clear();
    CHECK_STR(request("write %s 01", CTRL), "ok");
    CHECK_EQ(event_find("notify 7ad671aa"), -1);
    CHECK(event_find("log E notification failed: no buffer") >= 0);
    CHECK_STR(request("read %s", CTRL), "ok 02"); /* REQUEST_ACK all the same */
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);
}

/* --protocol seed: what a device running the seed's firmware serves. */
static void
smoke_seed_only(void)
{
    char *args[] = { "--protocol", "seed", NULL };
    int advs, svcs, chrs;

    CHECK(spawn_device(args, false) == 0);
    CHECK(read_startup(&advs, &svcs, &chrs));
    CHECK_EQ(advs, 0);
    CHECK_EQ(svcs, 2);
    CHECK_EQ(chrs, 4);
    CHECK_STR(request("connect 517"), "ok 517");
    CHECK_STR(request("read %s", INFO), "err 0a");
    CHECK_STR(request("write %s 05", CMD), "err 0a");
    CHECK_STR(request("write-cmd %s 00000000e9", STREAM), "ok"); /* no response on air */
    CHECK_STR(request("subscribe %s 1", CMD), "err 0a");
    CHECK_STR(request("read 2a26"), "err 0a");
    CHECK_STR(request("read 2a24"), "ok 4553503332");
    CHECK_STR(request("subscribe %s 1", CTRL), "ok");
    events_clear();
    CHECK_STR(request("write %s 01", CTRL), "ok");
    CHECK(event_find("notify 7ad671aa-21c0-46a4-b722-270e3ae3d830 02") >= 0);
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);

    /* Another chip: the built-in image is built for it, Info reports it. */
    char *c3[] = { "--chip-id", "5", NULL };
    CHECK(spawn_device(c3, false) == 0);
    CHECK(read_startup(&advs, &svcs, &chrs));
    CHECK_STR(request("connect 517"), "ok 517");
    const char *info = request("read %s", INFO);
    CHECK(strncmp(info, "ok 04024f000500", 15) == 0);
    /* It runs its built-in image, and says which. */
    CHECK(strncmp(info + 3 + 2 * BLE_OTA_INFO_OFF_RUNNING_SIZE, "00000000", 8) != 0);
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);

    /* A platform that cannot read its running slot: no DELTA, the running image not known. */
    char *no_delta[] = { "--delta", "off", NULL };
    CHECK(spawn_device(no_delta, false) == 0);
    CHECK(read_startup(&advs, &svcs, &chrs));
    CHECK_STR(request("connect 517"), "ok 517");
    info = request("read %s", INFO);
    CHECK(strncmp(info, "ok 04020f00", 11) == 0);
    char zeros[2 * (BLE_OTA_INFO_SIZE - BLE_OTA_INFO_OFF_RUNNING_SIZE) + 1];
    memset(zeros, '0', sizeof(zeros) - 1);
    zeros[sizeof(zeros) - 1] = '\0';
    CHECK(strcmp(info + 3 + 2 * BLE_OTA_INFO_OFF_RUNNING_SIZE, zeros) == 0);
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);
}

static void
smoke_quit(void)
{
    CHECK_STR(request("quit"), "ok");
    CHECK_EQ(reap_device(3000), 0);
}

static void
smoke_eof_exits(void)
{
    /* Closing stdin ends the process, even with a restart pending. */
    CHECK(spawn_device(NULL, false) == 0);
    CHECK(event_wait("ready", REPLY_TIMEOUT_MS) >= 0);
    CHECK_EQ(reap_device(3000), 0);
}

static void
smoke_bad_options(void)
{
    char *bad_image[] = { "--image", "/nonexistent/image.bin", NULL };
    CHECK(spawn_device(bad_image, true) == 0);
    CHECK_EQ(reap_device(3000), 1);
    char *bad_mtu[] = { "--mtu", "10", NULL };
    CHECK(spawn_device(bad_mtu, true) == 0);
    CHECK_EQ(reap_device(3000), 2);
    char *small_slot[] = { "--slot-size", "4096", NULL };
    CHECK(spawn_device(small_slot, true) == 0);
    CHECK_EQ(reap_device(3000), 1); /* the built-in image does not fit */
    char *const bad[][3] = {
        { "--protocol", "v3", NULL },  { "--chip-id", "65536", NULL },        { "--window", "0", NULL },
        { "--window", "65536", NULL }, { "--abandon-timeout-ms", "0", NULL }, { "--confirm-window-ms", "x", NULL },
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *argv[3] = { bad[i][0], bad[i][1], NULL };
        CHECK(spawn_device(argv, true) == 0);
        CHECK_EQ(reap_device(3000), 2);
    }
}

int
main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: smoke-virtual PATH/TO/virtual-esp32\n");
        return 2;
    }
    s_binary = argv[1];
    signal(SIGPIPE, SIG_IGN);

    RUN(smoke_gatt_uuids);
    RUN(smoke_startup);
    RUN(smoke_gatt_basics);
    RUN(smoke_malformed);
    RUN(smoke_update);
    RUN(smoke_after_update);
    RUN(smoke_quit);
    RUN(smoke_v2_session);
    RUN(smoke_v2_timers);
    RUN(smoke_keyed_and_signed);
    RUN(smoke_faults);
    RUN(smoke_bt_glue);
    RUN(smoke_seed_only);
    RUN(smoke_random_requests);
    RUN(smoke_eof_exits);
    RUN(smoke_bad_options);

    if (s_child > 0) {
        reap_device(1000);
    }
    free(s_rbuf);
    return test_summary("smoke");
}
