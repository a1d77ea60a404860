/*
 * The virtual ESP32: the firmware's OTA core on the host platform, driven
 * over stdin/stdout with the line protocol of docs/VIRTUAL_ESP32.md.
 *
 * One process is one device. Requests are handled one at a time, each
 * completely (notifications included) before its reply. A restart the
 * firmware schedules runs in real time: the main loop polls stdin with the
 * time left as timeout, and checks the deadline before every request.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ble_ota_bt.h"
#include "ble_ota_core.h"
#include "ble_ota_gatt.h"
#include "host_image.h"
#include "host_port.h"

#define VESP_DEFAULT_NAME      "esp32"
#define VESP_DEFAULT_ADDRESS   "24:0a:c4:00:00:01"
#define VESP_DEFAULT_SLOT_SIZE 0x1E0000u
#define VESP_DEFAULT_MTU       517
#define VESP_ATT_MTU_MIN       23
#define VESP_ATT_VALUE_MAX     512 /* Core Spec Vol 3 Part F 3.2.9: the longest attribute value */
#define VESP_NAME_MAX          29  /* what fits a legacy advertisement with flags */
#define VESP_LINE_MAX          16384
#define VESP_VALUE_MAX         4096

/* --self-test manual: the firmware's CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S default. */
#define VESP_DEFAULT_SELF_TEST_TIMEOUT_MS 20000u

#define VESP_MANUFACTURER "Espressif (virtual)"
#define VESP_MODEL        "ESP32"

/* ATT error codes of the replies (besides the core's, see ble_ota_protocol.h). */
#define ATT_ERR_READ_NOT_PERMITTED  0x02
#define ATT_ERR_WRITE_NOT_PERMITTED 0x03
#define ATT_ERR_ATTR_NOT_FOUND      0x0A

/* HCI reasons in `disconnected` events. */
#define HCI_CONN_TIMEOUT     0x08 /* power cut: the central's supervision timer expires */
#define HCI_LOCAL_HOST_TERM  0x16 /* the device closed the link (restart) */
#define HCI_REMOTE_USER_TERM 0x13 /* the firmware ended the link (ble_gap_terminate): a stranger's */

/* The link a new connection has until the host says otherwise (`link`):
 * what noble's HCI bindings ask for in LE Create Connection at its
 * shortest interval (7.5 ms, latency 0, supervision timeout 420 ms), on
 * the LE 1M PHY with the 27-octet data length every connection starts
 * with (Core Vol 6, Part B, 4.5.10 and 4.6.2). */
#define VESP_LINK_INTERVAL 6  /* 1.25 ms units */
#define VESP_LINK_TIMEOUT  42 /* 10 ms units */
#define VESP_LINK_OCTETS   27

/* How often the core's timers (abandon timeout, confirm window) run. */
#define VESP_TICK_MS 50

/* Requests a `fault no-answer` can lose. */
typedef enum {
    REQ_CONNECT,
    REQ_READ,
    REQ_WRITE,
    REQ_WRITE_CMD,
    REQ_SUBSCRIBE,
    REQ_LOSABLE_COUNT,
} vesp_losable_t;

static const char *const k_losable[REQ_LOSABLE_COUNT] = { "connect", "read", "write", "write-cmd", "subscribe" };

/* What the device received since it started (`stats`). */
typedef struct {
    unsigned long writes;     /* Write Requests, CCCD writes included */
    unsigned long write_cmds; /* Write Commands */
    unsigned long reads;
    unsigned long notifies;     /* notifications that went out */
    unsigned long stream_bytes; /* bytes of OTA Stream values, offsets included */
} vesp_stats_t;

typedef struct {
    /* options */
    char name[VESP_NAME_MAX + 1];
    char address[18];
    uint32_t slot_size;
    const char *image_path;
    unsigned mtu;
    uint32_t restart_delay_ms;
    bool seed_only;                 /* --protocol seed: a device running the seed's firmware */
    bool flash_events;              /* --flash-events on: a `flash` line before each reply that used flash */
    int seed_protocol;              /* --seed-protocol: 1 on, 0 off, -1 as the build's default */
    bool no_deflate;                /* --deflate off: a platform that cannot inflate (no DEFLATE feature) */
    bool no_delta;                  /* --delta off: a platform that cannot read its running slot (no DELTA feature) */
    const char *key_partition_path; /* --key-partition: the provisioned key partition image */
    bool allow_unauthenticated;     /* --allow-unauthenticated on: CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED */
    bool require_signature;         /* --require-signature: CONFIG_SECURE_SIGNED_ON_UPDATE_NO_SECURE_BOOT */
    uint8_t device_id[BLE_OTA_DEVICE_ID_LEN];
    bool device_id_set;
    uint16_t chip_id;
    ble_ota_config_t config;

    host_dev_t dev;
    ble_ota_core_t core;
    vesp_stats_t stats;

    /* link */
    bool connected;
    bool subscribed;         /* OTA Control CCCD */
    bool subscribed_command; /* OTA Command CCCD */
    unsigned conn_mtu;

    int64_t next_tick_ms;

    /* faults injected by `fault` requests */
    uint32_t drop_notify;                  /* notifications still to lose */
    uint32_t no_buffer;                    /* notification attempts still to find no buffer */
    uint32_t no_answer[REQ_LOSABLE_COUNT]; /* requests of each kind still to lose */
    unsigned long faults_hit;              /* faults that took effect */

    /* flash counters at the last `flash` event */
    uint32_t reported_erases;
    uint32_t reported_blocks;
    uint32_t reported_pages;

    /* --self-test manual: a new image's self-test waits for a `self-test`
     * request (the application's own health check, which takes its time
     * on a device) instead of passing at boot */
    bool self_test_manual;
    bool self_test_waiting;
    /* no verdict by then fails it (CONFIG_BLE_OTA_APP_CHECK_TIMEOUT_S) */
    uint32_t self_test_timeout_ms;
    int64_t self_test_deadline_ms;

    /* restart scheduled by the firmware */
    bool restart_scheduled;
    bool drop_requested; /* the firmware asked to end the link (port disconnect) */
    int64_t restart_at_ms;
} vesp_t;

static vesp_t s_vesp;

/* --- output ----------------------------------------------------------------- */

static void
out_flush(void)
{
    if (fflush(stdout) != 0) {
        /* The host is gone: nobody to talk to. */
        exit(1);
    }
}

static void out_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
out_line(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    out_flush();
}

static void
out_hex(const uint8_t *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    char chunk[4096];
    size_t used = 0;

    if (len == 0) {
        putchar('-');
        return;
    }
    for (size_t i = 0; i < len; i++) {
        chunk[used++] = digits[data[i] >> 4];
        chunk[used++] = digits[data[i] & 15];
        if (used == sizeof(chunk)) {
            fwrite(chunk, 1, used, stdout);
            used = 0;
        }
    }
    fwrite(chunk, 1, used, stdout);
}

/* `log <level> <text>`, with anything that would break the line replaced. */
static void
out_log(char level, const char *text)
{
    char clean[256];
    size_t n = 0;

    for (; text[n] != '\0' && n < sizeof(clean) - 1; n++) {
        const unsigned char c = (unsigned char)text[n];
        clean[n] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
    }
    clean[n] = '\0';
    out_line("log %c %s", level, clean);
}

static void out_logf(char level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
out_logf(char level, const char *fmt, ...)
{
    char text[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    out_log(level, text);
}

/* `flash <sector erases> <page programs> <block erases>` done since the last one, for a
 * timing model of the flash (--flash-events): before the reply, so the host
 * knows them when the request completes. */
static void
report_flash(void)
{
    vesp_t *v = &s_vesp;
    const uint32_t erases = v->dev.flash.erases - v->reported_erases;
    const uint32_t blocks = v->dev.flash.block_erases - v->reported_blocks;
    const uint32_t pages = v->dev.flash.pages_programmed - v->reported_pages;

    if (!v->flash_events || (erases == 0 && blocks == 0 && pages == 0)) {
        return;
    }
    v->reported_erases = v->dev.flash.erases;
    v->reported_blocks = v->dev.flash.block_erases;
    v->reported_pages = v->dev.flash.pages_programmed;
    out_line("flash %lu %lu %lu", (unsigned long)erases, (unsigned long)pages, (unsigned long)blocks);
}

/* The power was cut during the request (`fault power-loss-after`): the
 * device never answers it. */
static bool
reply_lost(const char *id)
{
    if (!s_vesp.dev.flash.power_lost) {
        return false;
    }
    out_line("%s lost", id);
    return true;
}

static void
reply_ok(const char *id, const char *value)
{
    report_flash();
    if (reply_lost(id)) {
        return;
    }
    if (value != NULL) {
        out_line("%s ok %s", id, value);
    } else {
        out_line("%s ok", id);
    }
}

static void
reply_err(const char *id, unsigned att)
{
    report_flash();
    if (reply_lost(id)) {
        return;
    }
    out_line("%s err %02x", id, att & 0xFF);
}

/* --- time --------------------------------------------------------------------- */

static int64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- device hooks ----------------------------------------------------------- */

/* A notification that never reaches the central: the device lost power, or
 * a `fault drop-notify` is armed. */
static bool
vesp_notify_lost(vesp_t *v)
{
    if (v->dev.flash.power_lost) {
        return true;
    }
    if (v->drop_notify > 0) {
        v->drop_notify--;
        v->faults_hit++;
        out_log('W', "fault: notification lost");
        return true;
    }
    return false;
}

/* One attempt to hand a notification to the stack: none while a `fault
 * no-buffer` is armed, as NimBLE finds no free mbuf. */
static ble_ota_notify_result_t
vesp_notify_try(void *ctx)
{
    vesp_t *v = ctx;

    if (v->no_buffer > 0) {
        v->no_buffer--;
        v->faults_hit++;
        out_log('W', "fault: no buffer for a notification");
        return BLE_OTA_NOTIFY_NO_BUFFER;
    }
    return BLE_OTA_NOTIFY_SENT;
}

static void
vesp_notify_wait(void *ctx, uint32_t ms)
{
    /* The firmware's task sleeps while NimBLE frees buffers; here nothing
     * else runs in between, so there is nothing to wait for. */
    (void)ctx;
    (void)ms;
}

/* Whether a notification goes out, tried as the firmware tries it
 * (ble_ota_bt.h): from_ota_task, the ESP32's OTA task, which may wait for a
 * buffer (protocol v2); the seed's come from the host task, which does not. */
static bool
vesp_notify_sent(vesp_t *v, bool from_ota_task)
{
    const ble_ota_notifier_t notifier = { vesp_notify_try, vesp_notify_wait, v };

    if (ble_ota_bt_notify(&notifier, from_ota_task, NULL) != BLE_OTA_NOTIFY_SENT) {
        out_log('E', "notification failed: no buffer");
        return false;
    }
    return !vesp_notify_lost(v);
}

static void
hook_notify(void *user, uint8_t value)
{
    vesp_t *v = user;

    /* The central only hears it once subscribed. */
    if (v->connected && v->subscribed && vesp_notify_sent(v, false)) {
        v->stats.notifies++;
        out_line("notify %s %02x", BLE_OTA_CONTROL_UUID, value);
    }
}

static void
hook_notify_command(void *user, const uint8_t *data, size_t len)
{
    vesp_t *v = user;

    if (v->connected && v->subscribed_command && vesp_notify_sent(v, true)) {
        v->stats.notifies++;
        printf("notify %s ", BLE_OTA_COMMAND_UUID);
        out_hex(data, len);
        out_line("%s", "");
    }
}

static void
hook_log(void *user, ble_ota_log_level_t level, const char *msg)
{
    static const char letters[] = "EWID";

    (void)user;
    out_log(letters[(unsigned)level & 3], msg);
}

static void
hook_restart(void *user, uint32_t delay_ms)
{
    vesp_t *v = user;

    /* The core asks for BLE_OTA_RESTART_DELAY_MS; --restart-delay-ms
     * replaces it. A rollback asks for 0: immediate, as on the ESP32. */
    const uint32_t delay = delay_ms == 0 ? 0 : v->restart_delay_ms;
    v->restart_scheduled = true;
    v->restart_at_ms = now_ms() + delay;
    out_logf('I', "restart in %lu ms", (unsigned long)delay);
}

/* The firmware asked the central for a data length and PHY (NimBLE's
 * ble_gap_set_data_len, ble_gap_set_prefered_le_phy on the ESP32): told
 * to the host as an event, for the central it plays to answer (`link`). */
static bool
hook_link_data_path(void *user, uint16_t tx_octets, uint16_t tx_time_us, bool prefer_2m)
{
    vesp_t *v = user;

    if (v->connected) {
        out_line("link-request data-path %u %u %s", (unsigned)tx_octets, (unsigned)tx_time_us, prefer_2m ? "2m" : "1m");
    }
    return true;
}

/* The firmware asked for connection parameters (ble_gap_update_params). */
static bool
hook_link_conn_params(void *user, ble_ota_link_profile_t profile, const ble_ota_conn_params_t *p)
{
    vesp_t *v = user;

    if (v->connected) {
        out_line("link-request conn-params %s %u %u %u %u", profile == BLE_OTA_LINK_TRANSFER ? "transfer" : "idle",
                 (unsigned)p->itvl_min, (unsigned)p->itvl_max, (unsigned)p->latency, (unsigned)p->supervision_timeout);
    }
    return true;
}

static void
hook_disconnect(void *user)
{
    vesp_t *v = user;

    /* Taken down once the request (or tick) that asked is finished, as
     * ble_gap_terminate() returns at once and the link ends later. */
    v->drop_requested = true;
}

/* --- boot --------------------------------------------------------------------- */

/* The core's settings at this boot: authentication as main.c derives it
 * from the key partition. */
static void
vesp_boot_config(vesp_t *v, ble_ota_config_t *config)
{
    *config = v->config;
    const ble_ota_key_status_t key = host_dev_read_key(&v->dev, config->auth_key);
    ble_ota_config_key(config, key, v->allow_unauthenticated);
    if (key == BLE_OTA_KEY_CORRUPT || key == BLE_OTA_KEY_OTHER_DEVICE) {
        out_log('E', key == BLE_OTA_KEY_CORRUPT ? "key partition corrupt: updates stay off"
                                                : "key partition made for another device: updates stay off");
    } else if (!config->auth) {
        out_log('W', "no update key: anyone in Bluetooth range can update this device");
    }
    /* As our firmware's builds: one with authentication leaves the seed
     * protocol off unless told otherwise; one that opted out serves it. */
    config->serve_seed = v->seed_only || (v->seed_protocol >= 0 ? v->seed_protocol == 1 : !config->auth);
}

static void
vesp_core_start(vesp_t *v)
{
    ble_ota_config_t config;

    vesp_boot_config(v, &config);
    ble_ota_core_init(&v->core, &v->dev.port, &config);
}

/* The firmware judges the image once its BLE stack is up: here at once, as
 * the self-test passes, or (--self-test manual, a new image) when a
 * `self-test` request gives the application's verdict. */
static void
vesp_self_test(vesp_t *v, int slot)
{
    v->self_test_waiting = false;
    if (v->self_test_manual && host_dev_slot_state(&v->dev, slot) == HOST_SLOT_PENDING_VERIFY) {
        v->self_test_waiting = true;
        v->self_test_deadline_ms = now_ms() + v->self_test_timeout_ms;
        out_log('I', "self-test: waiting for the application's verdict");
        return;
    }
    ble_ota_core_confirm_boot(&v->core, true);
}

static void
vesp_boot(vesp_t *v)
{
    host_flash_power_restored(&v->dev.flash);
    v->restart_scheduled = false;
    v->drop_requested = false;
    const int slot = host_dev_boot(&v->dev);
    if (slot < 0) {
        out_line("boot none -");
    } else {
        out_line("boot %s %s", host_slot_name(slot), host_slot_state_name(host_dev_slot_state(&v->dev, slot)));
    }
    vesp_core_start(v);
    if (slot >= 0) {
        vesp_self_test(v, slot);
    }
}

/* The link drops from the device's side. */
static void
vesp_drop_link(vesp_t *v, unsigned reason)
{
    if (v->connected) {
        v->connected = false;
        v->subscribed = false;
        v->subscribed_command = false;
        out_line("disconnected %02x", reason);
    }
}

/* After a request or a timer: the link the firmware asked to end ends. */
static void
vesp_after_drop(vesp_t *v)
{
    if (!v->drop_requested) {
        return;
    }
    v->drop_requested = false;
    if (v->connected) {
        vesp_drop_link(v, HCI_REMOTE_USER_TERM);
        ble_ota_core_disconnected(&v->core);
    }
}

/* After a request or a timer: a power cut during a flash operation (`fault
 * power-loss-after`) takes the link down, and the device powers on again. */
static void
vesp_after_power_loss(vesp_t *v)
{
    while (v->dev.flash.power_lost) {
        v->faults_hit++;
        out_log('W', "fault: power lost during a flash operation");
        vesp_drop_link(v, HCI_CONN_TIMEOUT);
        vesp_boot(v);
    }
}

/* The core's timers, then a restart that fell due (a confirm window that
 * ended asks for one at once). Run before every request, so that what fell
 * due while requests queued up comes first. */
static void
vesp_run_timers(vesp_t *v)
{
    const int64_t now = now_ms();

    if (now >= v->next_tick_ms) {
        v->next_tick_ms = now + VESP_TICK_MS;
        ble_ota_core_tick(&v->core);
        vesp_after_power_loss(v);
        vesp_after_drop(v);
    }
    if (v->self_test_waiting && now >= v->self_test_deadline_ms) {
        /* As the firmware: an application silent past its time has failed. */
        v->self_test_waiting = false;
        out_logf('E', "self-test: the application gave no verdict within %lu ms",
                 (unsigned long)v->self_test_timeout_ms);
        (void)ble_ota_core_confirm_boot(&v->core, false);
    }
    if (v->restart_scheduled && now_ms() >= v->restart_at_ms) {
        out_log('I', "restarting");
        vesp_drop_link(v, HCI_LOCAL_HOST_TERM);
        vesp_boot(v);
        vesp_after_power_loss(v);
    }
}

/* --- parsing helpers ---------------------------------------------------------- */

static bool
parse_u32(const char *s, uint32_t max, uint32_t *out)
{
    uint64_t v = 0;

    if (s == NULL || *s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > max) {
            return false;
        }
    }
    *out = (uint32_t)v;
    return true;
}

typedef enum {
    HEX_OK = 0,
    HEX_MALFORMED,
    HEX_TOO_LONG,
} hex_result_t;

/* Hex (or "-" for empty) into out. */
static hex_result_t
parse_hex(const char *s, uint8_t *out, size_t cap, size_t *len)
{
    if (strcmp(s, "-") == 0) {
        *len = 0;
        return HEX_OK;
    }
    const size_t n = strlen(s);
    if (n == 0 || n % 2 != 0) {
        return HEX_MALFORMED;
    }
    for (size_t i = 0; i < n; i++) {
        if (ble_ota_hex_value(s[i]) < 0) {
            return HEX_MALFORMED;
        }
    }
    if (n / 2 > cap) {
        return HEX_TOO_LONG;
    }
    for (size_t i = 0; i < n / 2; i++) {
        out[i] = (uint8_t)(ble_ota_hex_value(s[2 * i]) << 4 | ble_ota_hex_value(s[2 * i + 1]));
    }
    *len = n / 2;
    return HEX_OK;
}

/* A UUID as a request names it (noble's form: 4 or 32 hex digits, dashes
 * allowed) as its bytes on the air, by the firmware's own parser
 * (ble_ota_uuid_parse); a 128-bit UUID on the Bluetooth base UUID is its
 * 16-bit form. Returns its length, 0 when it is none. */
static size_t
request_uuid(const char *in, uint8_t out[BLE_OTA_UUID_MAX_LEN])
{
    /* 00000000-0000-1000-8000-00805f9b34fb without its 16-bit value, in air order. */
    static const uint8_t k_base[12] = { 0xfb, 0x34, 0x9b, 0x5f, 0x80, 0x00, 0x00, 0x80, 0x00, 0x10, 0x00, 0x00 };
    char digits[33];
    size_t n = 0;

    for (; *in != '\0'; in++) {
        if (*in == '-') {
            continue;
        }
        if (ble_ota_hex_value(*in) < 0 || n == 32) {
            return 0;
        }
        digits[n++] = *in;
    }
    digits[n] = '\0';
    if (n == 4) {
        return ble_ota_uuid_parse(digits, out);
    }
    if (n != 32) {
        return 0;
    }
    char text[37];
    snprintf(text, sizeof(text), "%.8s-%.4s-%.4s-%.4s-%.12s", digits, digits + 8, digits + 12, digits + 16,
             digits + 20);
    if (ble_ota_uuid_parse(text, out) != 16) {
        return 0;
    }
    if (memcmp(out, k_base, sizeof(k_base)) == 0 && out[14] == 0 && out[15] == 0) {
        out[0] = out[12];
        out[1] = out[13];
        return 2;
    }
    return 16;
}

/* The GATT table is the firmware's (ble_ota_gatt.h); a seed device
 * (--protocol seed) serves only the seed's part of it. */
static bool
vesp_serves(const vesp_t *v, ble_ota_chr_t id)
{
    return ble_ota_gatt_chrs[id].seed || !v->seed_only;
}

/* The characteristic a request names, if the device serves it; else an
 * unknown one, as on a device without it. */
static bool
find_chr(const vesp_t *v, const char *uuid, ble_ota_chr_t *out)
{
    uint8_t want[BLE_OTA_UUID_MAX_LEN], have[BLE_OTA_UUID_MAX_LEN];

    const size_t len = request_uuid(uuid, want);
    if (len == 0) {
        return false;
    }
    for (int i = 0; i < BLE_OTA_CHR_COUNT; i++) {
        const ble_ota_chr_t id = (ble_ota_chr_t)i;
        if (vesp_serves(v, id) && ble_ota_uuid_parse(ble_ota_gatt_chrs[id].uuid, have) == len &&
            memcmp(want, have, len) == 0) {
            *out = id;
            return true;
        }
    }
    return false;
}

/* --- requests ----------------------------------------------------------------- */

#define MAX_FIELDS 7 /* `link` takes the most */

typedef struct {
    const char *id;
    const char *cmd;
    const char *arg[MAX_FIELDS];
    int argc;
} request_t;

static bool
vesp_require_link(vesp_t *v, const request_t *r)
{
    if (!v->connected) {
        out_logf('W', "%s: no central connected", r->cmd);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return false;
    }
    return true;
}

static bool
vesp_args(const request_t *r, int n)
{
    if (r->argc != n) {
        out_logf('E', "%s takes %d argument%s, got %d", r->cmd, n, n == 1 ? "" : "s", r->argc);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return false;
    }
    return true;
}

static void
cmd_connect(vesp_t *v, const request_t *r)
{
    uint32_t central;

    if (!vesp_args(r, 1)) {
        return;
    }
    if (!parse_u32(r->arg[0], 65535, &central)) {
        out_logf('E', "connect: bad MTU '%.20s'", r->arg[0]);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    if (v->connected) {
        out_log('W', "connect: a central is already connected");
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    unsigned mtu = central < v->mtu ? central : v->mtu;
    if (mtu < VESP_ATT_MTU_MIN) {
        mtu = VESP_ATT_MTU_MIN;
    }
    v->connected = true;
    v->subscribed = false; /* no bonding: the CCCDs start cleared */
    v->subscribed_command = false;
    v->conn_mtu = mtu;
    v->dev.link = (ble_ota_link_info_t){
        .conn_itvl = VESP_LINK_INTERVAL,
        .supervision_timeout = VESP_LINK_TIMEOUT,
        .tx_phy = BLE_OTA_PHY_1M,
        .rx_phy = BLE_OTA_PHY_1M,
        .tx_octets = VESP_LINK_OCTETS,
        .rx_octets = VESP_LINK_OCTETS,
        .att_mtu = (uint16_t)mtu,
    };
    out_logf('I', "connected, ATT MTU %u", mtu);
    ble_ota_core_connected(&v->core);
    char value[12];
    snprintf(value, sizeof(value), "%u", mtu);
    reply_ok(r->id, value);
}

/* `link <interval> <latency> <timeout> <tx-phy> <rx-phy> <tx-octets> <rx-octets>`:
 * the link changed as the central's controller reports it (the events
 * NimBLE turns into BLE_GAP_EVENT_CONN_UPDATE, _PHY_UPDATE_COMPLETE and
 * _DATA_LEN_CHG), in the controller's units. */
static void
cmd_link(vesp_t *v, const request_t *r)
{
    /* Ranges of the HCI events (Core Vol 4, Part E, 7.7.65). */
    static const uint32_t max[7] = { 3200, 499, 3200, 3, 3, 251, 251 };
    static const uint32_t min[7] = { 6, 0, 10, 1, 1, 27, 27 };
    uint32_t n[7];

    if (r->argc != 7) {
        out_logf('E', "link takes 7 arguments, got %d", r->argc);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    for (int i = 0; i < 7; i++) {
        if (!parse_u32(r->arg[i], max[i], &n[i]) || n[i] < min[i]) {
            out_logf('E', "link: bad value '%.20s'", r->arg[i]);
            reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
            return;
        }
    }
    if (!vesp_require_link(v, r)) {
        return;
    }
    v->dev.link.conn_itvl = (uint16_t)n[0];
    v->dev.link.conn_latency = (uint16_t)n[1];
    v->dev.link.supervision_timeout = (uint16_t)n[2];
    v->dev.link.tx_phy = (uint8_t)n[3];
    v->dev.link.rx_phy = (uint8_t)n[4];
    v->dev.link.tx_octets = (uint16_t)n[5];
    v->dev.link.rx_octets = (uint16_t)n[6];
    reply_ok(r->id, NULL);
}

static void
cmd_disconnect(vesp_t *v, const request_t *r)
{
    if (!vesp_args(r, 0)) {
        return;
    }
    if (v->connected) {
        v->connected = false;
        v->subscribed = false;
        v->subscribed_command = false;
        out_log('I', "disconnected by the central");
        ble_ota_core_disconnected(&v->core);
    }
    reply_ok(r->id, NULL);
}

static void
cmd_read(vesp_t *v, const request_t *r)
{
    if (!vesp_args(r, 1) || !vesp_require_link(v, r)) {
        return;
    }
    v->stats.reads++;
    ble_ota_chr_t chr;
    if (!find_chr(v, r->arg[0], &chr)) {
        reply_err(r->id, ATT_ERR_ATTR_NOT_FOUND);
        return;
    }
    /* As NimBLE does from the characteristic's properties. */
    if (!(ble_ota_gatt_chrs[chr].props & BLE_OTA_PROP_READ)) {
        reply_err(r->id, ATT_ERR_READ_NOT_PERMITTED);
        return;
    }
    char version[33];
    const char *text = NULL;
    switch (chr) {
    case BLE_OTA_CHR_CONTROL: {
        const uint8_t value = ble_ota_core_control_read(&v->core);
        printf("%s ok ", r->id);
        out_hex(&value, 1);
        out_line("%s", "");
        return;
    }
    case BLE_OTA_CHR_INFO: {
        /* Longer than one ATT_MTU of 23 allows: on air a Read Blob series,
         * here the whole value (as noble hands it over). */
        uint8_t info[BLE_OTA_INFO_SIZE];
        const size_t n = ble_ota_core_info_read(&v->core, info, sizeof(info));
        printf("%s ok ", r->id);
        out_hex(info, n);
        out_line("%s", "");
        return;
    }
    case BLE_OTA_CHR_MANUFACTURER_NAME:
        text = VESP_MANUFACTURER;
        break;
    case BLE_OTA_CHR_MODEL_NUMBER:
        text = VESP_MODEL;
        break;
    case BLE_OTA_CHR_FIRMWARE_REVISION:
        host_dev_running_version(&v->dev, version);
        text = version;
        break;
    default: /* a readable characteristic without a value here */
        out_logf('E', "read: no value for characteristic %d", (int)chr);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    printf("%s ok ", r->id);
    out_hex((const uint8_t *)text, strlen(text));
    out_line("%s", "");
}

/* The longest value a write can carry: one PDU for a Write Command; for a
 * Write Request, also a long write (Prepare Write, Execute Write), which the
 * central sends when the value does not fit one PDU and the stack
 * reassembles (noble's HCI bindings and NimBLE both do), up to the ATT
 * limit. */
static size_t
vesp_write_max(const vesp_t *v, bool with_response)
{
    const size_t pdu = v->conn_mtu - 3;
    return with_response && pdu < VESP_ATT_VALUE_MAX ? VESP_ATT_VALUE_MAX : pdu;
}

static void
cmd_write(vesp_t *v, const request_t *r, bool with_response)
{
    static uint8_t value[VESP_VALUE_MAX];
    size_t len = 0;

    if (!vesp_args(r, 2)) {
        return;
    }
    const hex_result_t hex = parse_hex(r->arg[1], value, sizeof(value), &len);
    if (hex == HEX_MALFORMED) {
        out_logf('E', "%s: malformed value", r->cmd);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    if (!vesp_require_link(v, r)) {
        return;
    }

    if (with_response) {
        v->stats.writes++;
    } else {
        v->stats.write_cmds++;
    }
    unsigned att = 0;
    ble_ota_chr_t chr;
    if (!find_chr(v, r->arg[0], &chr)) {
        att = ATT_ERR_ATTR_NOT_FOUND;
    } else if (!(ble_ota_gatt_chrs[chr].props & (BLE_OTA_PROP_WRITE | BLE_OTA_PROP_WRITE_NO_RSP))) {
        /* As NimBLE does: either write property lets both kinds of write
         * reach the access callback. */
        att = ATT_ERR_WRITE_NOT_PERMITTED;
    } else if (hex == HEX_TOO_LONG || len > vesp_write_max(v, with_response)) {
        /* On air the PDU would exceed the MTU: the stack drops the link.
         * Refusing it here keeps the device usable while still failing. */
        const size_t wanted = hex == HEX_TOO_LONG ? strlen(r->arg[1]) / 2 : len;
        out_logf('W', "write of %zu bytes exceeds ATT MTU %u - 3", wanted, v->conn_mtu);
        att = BLE_OTA_ATT_ERR_INVALID_LEN;
    } else if (ble_ota_bt_write_check(len) != 0) {
        /* What the firmware's GATT layer refuses before the core sees it
         * (ble_ota_bt.h); at MTUs up to 517 the check above comes first. */
        att = ble_ota_bt_write_check(len);
    } else {
        switch (chr) {
        case BLE_OTA_CHR_CONTROL:
            att = ble_ota_status_to_att(ble_ota_core_control_write(&v->core, value, len));
            break;
        case BLE_OTA_CHR_DATA:
            att = ble_ota_status_to_att(ble_ota_core_data_write(&v->core, value, len));
            break;
        case BLE_OTA_CHR_COMMAND:
            att = ble_ota_status_to_att(ble_ota_core_command_write(&v->core, value, len));
            break;
        case BLE_OTA_CHR_STREAM:
            v->stats.stream_bytes += len;
            att = ble_ota_status_to_att(ble_ota_core_stream_write(&v->core, value, len));
            break;
        default: /* a writable characteristic without a handler here */
            out_logf('E', "%s: no handler for characteristic %d", r->cmd, (int)chr);
            att = BLE_OTA_ATT_ERR_UNLIKELY;
            break;
        }
    }

    if (with_response) {
        if (att == 0) {
            reply_ok(r->id, NULL);
        } else {
            reply_err(r->id, att);
        }
        return;
    }
    /* A Write Command has no response on air: NimBLE runs the access
     * callback (write and write-without-response share one permission)
     * and drops its error. */
    if (att != 0) {
        out_logf('W', "write-cmd to %s failed with ATT error 0x%02x (not reported on air)", r->arg[0], att);
    }
    reply_ok(r->id, NULL);
}

static void
cmd_subscribe(vesp_t *v, const request_t *r)
{
    if (!vesp_args(r, 1 + 1) || !vesp_require_link(v, r)) {
        return;
    }
    ble_ota_chr_t chr;
    const bool found = find_chr(v, r->arg[0], &chr);
    if (strcmp(r->arg[1], "0") != 0 && strcmp(r->arg[1], "1") != 0) {
        out_logf('E', "subscribe: expected 0 or 1, got '%.20s'", r->arg[1]);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    /* A CCCD write is a Write Request on air. */
    v->stats.writes++;
    if (found && chr == BLE_OTA_CHR_CONTROL) {
        v->subscribed = r->arg[1][0] == '1';
    } else if (found && chr == BLE_OTA_CHR_COMMAND) {
        v->subscribed_command = r->arg[1][0] == '1';
    } else {
        /* Only characteristics that notify have a CCCD: OTA Control and
         * OTA Command. */
        reply_err(r->id, ATT_ERR_ATTR_NOT_FOUND);
        return;
    }
    reply_ok(r->id, NULL);
}

static void
cmd_power_cycle(vesp_t *v, const request_t *r)
{
    if (!vesp_args(r, 0)) {
        return;
    }
    out_log('I', "power cycle");
    vesp_drop_link(v, HCI_CONN_TIMEOUT);
    vesp_boot(v);
    vesp_after_power_loss(v);
    reply_ok(r->id, NULL);
}

/* `self-test pass|fail`: the application's verdict on the new image it
 * runs (--self-test manual); the firmware confirms it (or leaves it to the
 * client's CONFIRM), or rolls it back. */
static void
cmd_self_test(vesp_t *v, const request_t *r)
{
    if (r->argc != 1 || (strcmp(r->arg[0], "pass") != 0 && strcmp(r->arg[0], "fail") != 0)) {
        out_logf('E', "self-test takes pass or fail");
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    if (!v->self_test_waiting) {
        out_logf('E', "self-test: no self-test waits for a verdict (--self-test manual, a new image booted)");
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    const bool passed = strcmp(r->arg[0], "pass") == 0;
    v->self_test_waiting = false;
    out_logf(passed ? 'I' : 'E', "self-test %s", passed ? "passed" : "FAILED");
    (void)ble_ota_core_confirm_boot(&v->core, passed);
    /* The running image's state now: valid, pending-verify (waiting for a
     * client's CONFIRM) or invalid (rolled back, the restart scheduled). */
    reply_ok(r->id, host_slot_state_name(host_dev_slot_state(&v->dev, v->dev.running)));
}

static void
cmd_fault(vesp_t *v, const request_t *r)
{
    uint32_t n = 0;
    const char *kind = r->argc > 0 ? r->arg[0] : "";
    const char *count = r->argc > 0 ? r->arg[r->argc - 1] : "";

    if (strcmp(kind, "clear") == 0 && r->argc == 1) {
        v->drop_notify = 0;
        v->no_buffer = 0;
        memset(v->no_answer, 0, sizeof(v->no_answer));
        host_flash_fail_write_after(&v->dev.flash, 0);
        host_flash_power_loss_after(&v->dev.flash, 0);
        reply_ok(r->id, NULL);
        return;
    }
    const bool two = r->argc == 2 && parse_u32(count, 1000000, &n);
    if (r->argc == 3 && strcmp(kind, "bit-rot") == 0) {
        const int slot = host_slot_from_name(r->arg[1]);
        if (slot < 0 || !parse_u32(count, v->dev.flash.slot_size - 1u, &n) || !host_flash_rot(&v->dev.flash, slot, n)) {
            out_logf('E', "fault bit-rot: bad slot or offset (slot size %lu)", (unsigned long)v->dev.flash.slot_size);
            reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
            return;
        }
        v->faults_hit++;
    } else if (two && strcmp(kind, "flash-write-fail") == 0) {
        host_flash_fail_write_after(&v->dev.flash, n);
    } else if (two && strcmp(kind, "power-loss-after") == 0) {
        host_flash_power_loss_after(&v->dev.flash, n);
    } else if (two && strcmp(kind, "drop-notify") == 0) {
        v->drop_notify = n;
    } else if (two && strcmp(kind, "no-buffer") == 0) {
        v->no_buffer = n;
    } else if (r->argc == 3 && strcmp(kind, "no-answer") == 0 && parse_u32(count, 1000000, &n)) {
        int which = -1;
        for (int i = 0; i < REQ_LOSABLE_COUNT; i++) {
            if (strcmp(r->arg[1], k_losable[i]) == 0) {
                which = i;
            }
        }
        if (which < 0) {
            out_logf('E', "fault no-answer: unknown request '%.20s'", r->arg[1]);
            reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
            return;
        }
        v->no_answer[which] = n;
    } else {
        out_logf('E',
                 "fault: expected flash-write-fail N, power-loss-after N, drop-notify N, no-buffer N, "
                 "no-answer <request> N, bit-rot <slot> <offset> or clear, got '%.20s'",
                 kind);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    out_logf('I', "fault armed: %s", kind);
    reply_ok(r->id, NULL);
}

static void
cmd_faults(vesp_t *v, const request_t *r)
{
    char value[32];

    if (!vesp_args(r, 0)) {
        return;
    }
    snprintf(value, sizeof(value), "hit=%lu", v->faults_hit + (unsigned long)v->dev.flash.injected);
    reply_ok(r->id, value);
}

/* The transfer of either protocol (only one can be under way). */
static const char *
transfer_name(const ble_ota_core_t *core)
{
    switch (core->v2.state) {
    case BLE_OTA_V2_RECEIVING:
        return "receiving";
    case BLE_OTA_V2_SUSPENDED:
        return "suspended";
    case BLE_OTA_V2_COMPLETE:
        return core->v2.restart_requested ? "restarting" : "complete";
    case BLE_OTA_V2_IDLE:
    default:
        break;
    }
    switch (core->state) {
    case BLE_OTA_STATE_RECEIVING:
        return "receiving";
    case BLE_OTA_STATE_RESTARTING:
        return "restarting";
    case BLE_OTA_STATE_IDLE:
    default:
        return "idle";
    }
}

static void
cmd_state(vesp_t *v, const request_t *r)
{
    const host_flash_t *f = &v->dev.flash;

    if (!vesp_args(r, 0)) {
        return;
    }
    out_line("%s ok running=%s boot=%s ota_0=%s:%lu ota_1=%s:%lu transfer=%s confirm=%d", r->id,
             host_slot_name(v->dev.running), host_slot_name(f->boot_slot), host_slot_state_name(f->slot[0].state),
             (unsigned long)f->slot[0].image_len, host_slot_state_name(f->slot[1].state),
             (unsigned long)f->slot[1].image_len, transfer_name(&v->core), v->core.confirm_waiting ? 1 : 0);
}

static void
cmd_stats(vesp_t *v, const request_t *r)
{
    const vesp_stats_t *s = &v->stats;

    if (!vesp_args(r, 0)) {
        return;
    }
    out_line("%s ok writes=%lu write-cmds=%lu reads=%lu notifies=%lu stream-bytes=%lu", r->id, s->writes, s->write_cmds,
             s->reads, s->notifies, s->stream_bytes);
}

/* `idle [steps]`: the device has time with nothing to do, as the ESP32's
 * OTA task has whenever its queue is empty: its idle work
 * (ble_ota_core_idle: the next update's slot erased a step at a time), up
 * to `steps` steps (none or 0: until nothing is left). The harness says
 * when the device is idle, so a modelled run is the same every time. Its
 * flash work is idle time, no request's: with --flash-events it goes out as
 * `flash-idle <sector erases> <page programs> <block erases>`. Replies
 * steps=<erase steps done> more=<1 while more is left>. */
static void
cmd_idle(vesp_t *v, const request_t *r)
{
    uint32_t max = 0;

    if (r->argc > 1 || (r->argc == 1 && !parse_u32(r->arg[0], UINT32_MAX, &max))) {
        out_logf('E', "idle takes an optional step count");
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    report_flash(); /* what came before is not idle work */
    unsigned long steps = 0;
    bool more = true;
    while (more && (max == 0 || steps < max)) {
        const uint32_t ops = v->dev.flash.erases + v->dev.flash.block_erases;
        more = ble_ota_core_idle(&v->core);
        if (v->dev.flash.erases + v->dev.flash.block_erases == ops) {
            break;
        }
        steps++;
    }
    const uint32_t erases = v->dev.flash.erases - v->reported_erases;
    const uint32_t blocks = v->dev.flash.block_erases - v->reported_blocks;
    const uint32_t pages = v->dev.flash.pages_programmed - v->reported_pages;
    v->reported_erases = v->dev.flash.erases;
    v->reported_blocks = v->dev.flash.block_erases;
    v->reported_pages = v->dev.flash.pages_programmed;
    if (v->flash_events && (erases != 0 || blocks != 0 || pages != 0)) {
        out_line("flash-idle %lu %lu %lu", (unsigned long)erases, (unsigned long)pages, (unsigned long)blocks);
    }
    char value[40];
    snprintf(value, sizeof(value), "steps=%lu more=%d", steps, more ? 1 : 0);
    reply_ok(r->id, value);
}

static void
cmd_flash_read(vesp_t *v, const request_t *r)
{
    uint32_t offset, length;

    if (!vesp_args(r, 3)) {
        return;
    }
    const int slot = host_slot_from_name(r->arg[0]);
    const uint32_t size = v->dev.flash.slot_size;
    if (slot < 0 || !parse_u32(r->arg[1], size, &offset) || !parse_u32(r->arg[2], size, &length) ||
        length > size - offset) {
        out_logf('E', "flash-read: bad slot or range (slot size %lu)", (unsigned long)size);
        reply_err(r->id, BLE_OTA_ATT_ERR_UNLIKELY);
        return;
    }
    printf("%s ok ", r->id);
    out_hex(host_flash_slot(&v->dev.flash, slot) + offset, length);
    out_line("%s", "");
}

static bool
is_request_id(const char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        if (s[n] < '0' || s[n] > '9') {
            return false;
        }
    }
    return n > 0 && n <= 18;
}

/* Handles one line (NUL-terminated, no newline). Returns false on quit. */
static bool
vesp_handle_line(vesp_t *v, char *line)
{
    request_t r = { 0 };
    char *fields[MAX_FIELDS + 2];
    int nfields = 0;

    size_t len = strlen(line);
    if (len > 0 && line[len - 1] == '\r') {
        line[--len] = '\0';
    }
    if (len == 0) {
        return true;
    }

    /* Kept for the log: splitting cuts the line at its first space. */
    char shown[61];
    snprintf(shown, sizeof(shown), "%s", line);

    /* Fields are separated by single spaces; an empty field is malformed. */
    char *p = line;
    bool bad = false;
    for (;;) {
        char *space = strchr(p, ' ');
        if (nfields == MAX_FIELDS + 2) {
            bad = true;
            break;
        }
        fields[nfields++] = p;
        if (space == NULL) {
            break;
        }
        *space = '\0';
        p = space + 1;
    }
    for (int i = 0; i < nfields && !bad; i++) {
        bad = fields[i][0] == '\0';
    }
    if (nfields == 0 || !is_request_id(fields[0])) {
        out_logf('E', "malformed request: %s", shown);
        return true;
    }
    if (bad || nfields < 2) {
        out_logf('E', "malformed request %s", fields[0]);
        reply_err(fields[0], BLE_OTA_ATT_ERR_UNLIKELY);
        return true;
    }
    r.id = fields[0];
    r.cmd = fields[1];
    r.argc = nfields - 2;
    for (int i = 0; i < r.argc; i++) {
        r.arg[i] = fields[i + 2];
    }

    for (int i = 0; i < REQ_LOSABLE_COUNT; i++) {
        if (strcmp(r.cmd, k_losable[i]) == 0 && v->no_answer[i] > 0) {
            /* Lost on air: the device never sees it, nothing comes back. */
            v->no_answer[i]--;
            v->faults_hit++;
            out_logf('W', "fault: %s lost, never answered", r.cmd);
            out_line("%s lost", r.id);
            return true;
        }
    }

    if (strcmp(r.cmd, "connect") == 0) {
        cmd_connect(v, &r);
    } else if (strcmp(r.cmd, "disconnect") == 0) {
        cmd_disconnect(v, &r);
    } else if (strcmp(r.cmd, "link") == 0) {
        cmd_link(v, &r);
    } else if (strcmp(r.cmd, "read") == 0) {
        cmd_read(v, &r);
    } else if (strcmp(r.cmd, "write") == 0) {
        cmd_write(v, &r, true);
    } else if (strcmp(r.cmd, "write-cmd") == 0) {
        cmd_write(v, &r, false);
    } else if (strcmp(r.cmd, "subscribe") == 0) {
        cmd_subscribe(v, &r);
    } else if (strcmp(r.cmd, "power-cycle") == 0) {
        cmd_power_cycle(v, &r);
    } else if (strcmp(r.cmd, "state") == 0) {
        cmd_state(v, &r);
    } else if (strcmp(r.cmd, "stats") == 0) {
        cmd_stats(v, &r);
    } else if (strcmp(r.cmd, "flash-read") == 0) {
        cmd_flash_read(v, &r);
    } else if (strcmp(r.cmd, "idle") == 0) {
        cmd_idle(v, &r);
    } else if (strcmp(r.cmd, "fault") == 0) {
        cmd_fault(v, &r);
    } else if (strcmp(r.cmd, "self-test") == 0) {
        cmd_self_test(v, &r);
    } else if (strcmp(r.cmd, "faults") == 0) {
        cmd_faults(v, &r);
    } else if (strcmp(r.cmd, "quit") == 0) {
        if (vesp_args(&r, 0)) {
            reply_ok(r.id, NULL);
            return false;
        }
    } else {
        out_logf('E', "unknown request '%.30s'", r.cmd);
        reply_err(r.id, BLE_OTA_ATT_ERR_UNLIKELY);
    }
    return true;
}

/* A line longer than VESP_LINE_MAX: answer its id, if it has one. */
static void
vesp_handle_overlong(char *prefix)
{
    char *space = strchr(prefix, ' ');
    if (space != NULL) {
        *space = '\0';
    }
    out_logf('E', "request longer than %d bytes ignored", VESP_LINE_MAX - 1);
    if (space != NULL && is_request_id(prefix)) {
        reply_err(prefix, BLE_OTA_ATT_ERR_UNLIKELY);
    }
}

/* --- start-up ------------------------------------------------------------------- */

static void
usage(FILE *f)
{
    fprintf(f, "usage: virtual-esp32 [--name NAME] [--address AA:BB:CC:DD:EE:FF] [--slot-size BYTES]\n"
               "                     [--image FILE] [--mtu N] [--restart-delay-ms MS]\n"
               "                     [--protocol seed|v2] [--chip-id N] [--window BYTES]\n"
               "                     [--abandon-timeout-ms MS] [--confirm-window-ms MS]\n"
               "                     [--key-partition FILE] [--allow-unauthenticated on|off]\n"
               "                     [--device-id AA:BB:CC:DD:EE:FF] [--require-signature on|off]\n"
               "                     [--seed-protocol on|off] [--flash-events on|off] [--deflate on|off]\n"
               "                     [--delta on|off] [--self-test auto|manual] [--self-test-timeout-ms MS]\n"
               "Speaks the line protocol of docs/VIRTUAL_ESP32.md on stdin/stdout.\n");
}

static bool
valid_address(const char *s)
{
    if (strlen(s) != 17) {
        return false;
    }
    for (int i = 0; i < 17; i++) {
        if (i % 3 == 2 ? s[i] != ':' : ble_ota_hex_value(s[i]) < 0) {
            return false;
        }
    }
    return true;
}

static bool
valid_name(const char *s)
{
    const size_t n = strlen(s);
    if (n == 0 || n > VESP_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7F) {
            return false;
        }
    }
    return true;
}

static int
bad_option(const char *opt, const char *value, const char *what)
{
    fprintf(stderr, "virtual-esp32: %s '%s': %s\n", opt, value == NULL ? "" : value, what);
    usage(stderr);
    return 2;
}

/* Returns 0, or the exit code. */
static int
parse_options(vesp_t *v, int argc, char **argv)
{
    snprintf(v->name, sizeof(v->name), "%s", VESP_DEFAULT_NAME);
    snprintf(v->address, sizeof(v->address), "%s", VESP_DEFAULT_ADDRESS);
    v->slot_size = VESP_DEFAULT_SLOT_SIZE;
    v->mtu = VESP_DEFAULT_MTU;
    v->restart_delay_ms = BLE_OTA_RESTART_DELAY_MS;
    v->self_test_timeout_ms = VESP_DEFAULT_SELF_TEST_TIMEOUT_MS;
    ble_ota_config_default(&v->config);
    v->seed_protocol = -1;
    v->require_signature = true;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            usage(stdout);
            return -1;
        }
        if (i + 1 >= argc) {
            return bad_option(opt, NULL, "unknown option or missing value");
        }
        const char *val = argv[++i];
        uint32_t n;
        if (strcmp(opt, "--name") == 0) {
            if (!valid_name(val)) {
                return bad_option(opt, val, "1 to 29 characters, no spaces");
            }
            snprintf(v->name, sizeof(v->name), "%s", val);
        } else if (strcmp(opt, "--address") == 0) {
            if (!valid_address(val)) {
                return bad_option(opt, val, "expected AA:BB:CC:DD:EE:FF");
            }
            for (int k = 0; k < 17; k++) {
                const char c = val[k];
                v->address[k] = (c >= 'A' && c <= 'F') ? (char)(c - 'A' + 'a') : c;
            }
            v->address[17] = '\0';
        } else if (strcmp(opt, "--slot-size") == 0) {
            if (!parse_u32(val, HOST_FLASH_MAX_SLOT, &n) || n < HOST_FLASH_SECTOR_SIZE) {
                return bad_option(opt, val, "4096 to 16777216 bytes");
            }
            v->slot_size = n;
        } else if (strcmp(opt, "--image") == 0) {
            v->image_path = val;
        } else if (strcmp(opt, "--mtu") == 0) {
            if (!parse_u32(val, 517, &n) || n < VESP_ATT_MTU_MIN) {
                return bad_option(opt, val, "23 to 517");
            }
            v->mtu = n;
        } else if (strcmp(opt, "--restart-delay-ms") == 0) {
            if (!parse_u32(val, 600000, &n)) {
                return bad_option(opt, val, "0 to 600000");
            }
            v->restart_delay_ms = n;
        } else if (strcmp(opt, "--protocol") == 0) {
            if (strcmp(val, "seed") != 0 && strcmp(val, "v2") != 0) {
                return bad_option(opt, val, "seed or v2");
            }
            v->seed_only = strcmp(val, "seed") == 0;
        } else if (strcmp(opt, "--chip-id") == 0) {
            if (!parse_u32(val, 65535, &n)) {
                return bad_option(opt, val, "0 to 65535");
            }
            v->chip_id = (uint16_t)n;
        } else if (strcmp(opt, "--window") == 0) {
            /* OTA Info and the BEGIN answer carry it in 16 bits. */
            if (!parse_u32(val, 65535, &n) || n == 0) {
                return bad_option(opt, val, "1 to 65535 bytes");
            }
            v->config.window = (uint16_t)n;
        } else if (strcmp(opt, "--abandon-timeout-ms") == 0) {
            if (!parse_u32(val, 86400000, &n) || n == 0) {
                return bad_option(opt, val, "1 to 86400000");
            }
            v->config.abandon_timeout_ms = n;
        } else if (strcmp(opt, "--confirm-window-ms") == 0) {
            if (!parse_u32(val, 86400000, &n)) {
                return bad_option(opt, val, "0 (no limit) to 86400000");
            }
            v->config.confirm_window_ms = n;
        } else if (strcmp(opt, "--key-partition") == 0) {
            v->key_partition_path = val;
        } else if (strcmp(opt, "--device-id") == 0) {
            if (!valid_address(val)) {
                return bad_option(opt, val, "expected AA:BB:CC:DD:EE:FF");
            }
            for (int k = 0; k < BLE_OTA_DEVICE_ID_LEN; k++) {
                v->device_id[k] = (uint8_t)(ble_ota_hex_value(val[3 * k]) << 4 | ble_ota_hex_value(val[3 * k + 1]));
            }
            v->device_id_set = true;
        } else if (strcmp(opt, "--allow-unauthenticated") == 0 || strcmp(opt, "--require-signature") == 0) {
            if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0) {
                return bad_option(opt, val, "on or off");
            }
            if (strcmp(opt, "--allow-unauthenticated") == 0) {
                v->allow_unauthenticated = strcmp(val, "on") == 0;
            } else {
                v->require_signature = strcmp(val, "on") == 0;
            }
        } else if (strcmp(opt, "--deflate") == 0) {
            if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0) {
                return bad_option(opt, val, "on or off");
            }
            v->no_deflate = strcmp(val, "off") == 0;
        } else if (strcmp(opt, "--delta") == 0) {
            if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0) {
                return bad_option(opt, val, "on or off");
            }
            v->no_delta = strcmp(val, "off") == 0;
        } else if (strcmp(opt, "--flash-events") == 0) {
            if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0) {
                return bad_option(opt, val, "on or off");
            }
            v->flash_events = strcmp(val, "on") == 0;
        } else if (strcmp(opt, "--self-test") == 0) {
            if (strcmp(val, "auto") != 0 && strcmp(val, "manual") != 0) {
                return bad_option(opt, val, "auto or manual");
            }
            v->self_test_manual = strcmp(val, "manual") == 0;
        } else if (strcmp(opt, "--self-test-timeout-ms") == 0) {
            if (!parse_u32(val, 86400000, &n) || n == 0) {
                return bad_option(opt, val, "1 to 86400000");
            }
            v->self_test_timeout_ms = n;
        } else if (strcmp(opt, "--seed-protocol") == 0) {
            if (strcmp(val, "on") != 0 && strcmp(val, "off") != 0) {
                return bad_option(opt, val, "on or off");
            }
            v->seed_protocol = strcmp(val, "on") == 0;
        } else {
            return bad_option(opt, val, "unknown option");
        }
    }
    if (v->seed_only && v->key_partition_path != NULL) {
        return bad_option("--key-partition", v->key_partition_path,
                          "a seed device (--protocol seed) has no authentication");
    }
    if (v->seed_only) {
        /* The seed's firmware: no key, no signature check. */
        v->allow_unauthenticated = true;
        v->require_signature = false;
    }
    if (!v->device_id_set) {
        /* The address a device advertises is derived from its base MAC;
         * here they are the same. */
        for (int k = 0; k < BLE_OTA_DEVICE_ID_LEN; k++) {
            v->device_id[k] =
                (uint8_t)(ble_ota_hex_value(v->address[3 * k]) << 4 | ble_ota_hex_value(v->address[3 * k + 1]));
        }
    }
    return 0;
}

/* Writes the --key-partition file into the key partition, as esptool
 * would over USB; false (message printed) on error. */
static bool
provision_key(vesp_t *v)
{
    uint8_t part[HOST_FLASH_KEY_PART_SIZE];

    if (v->key_partition_path == NULL) {
        return true;
    }
    FILE *f = fopen(v->key_partition_path, "rb");
    if (f == NULL) {
        fprintf(stderr, "virtual-esp32: --key-partition %s: %s\n", v->key_partition_path, strerror(errno));
        return false;
    }
    const size_t n = fread(part, 1, sizeof(part), f);
    const bool failed = ferror(f) != 0 || fgetc(f) != EOF;
    fclose(f);
    if (failed || n < BLE_OTA_KEY_RECORD_LEN) {
        fprintf(stderr, "virtual-esp32: --key-partition %s: %s\n", v->key_partition_path,
                failed ? "not a key partition image (read error, or larger than 4096 bytes)"
                       : "too short for a key record");
        return false;
    }
    host_flash_key_write(&v->dev.flash, part, n);
    return true;
}

/* Reads the --image file, at most max bytes; NULL (message printed) on error. */
static uint8_t *
read_image_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "virtual-esp32: --image %s: %s\n", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = malloc(max + 1);
    if (buf == NULL) {
        fclose(f);
        fprintf(stderr, "virtual-esp32: out of memory\n");
        return NULL;
    }
    *len = fread(buf, 1, max + 1, f);
    const bool failed = ferror(f) != 0;
    fclose(f);
    if (failed || *len > max) {
        fprintf(stderr, "virtual-esp32: --image %s: %s\n", path, failed ? "read error" : "larger than the slot");
        free(buf);
        return NULL;
    }
    return buf;
}

/* Flashes the first image into ota_0, as a factory setup would. */
static bool
install_first_image(vesp_t *v)
{
    char why[160];
    uint8_t *image;
    size_t len = 0;

    if (v->image_path != NULL) {
        image = read_image_file(v->image_path, v->slot_size, &len);
        if (image == NULL) {
            return false;
        }
    } else {
        const host_image_spec_t spec = {
            .project = "virtual-esp32",
            .version = "1.0.0",
            .payload_len = 8192,
            .seed = 1,
            .chip_id = v->chip_id,
            .hash_appended = true,
        };
        len = host_image_build_size(&spec);
        image = malloc(len);
        if (image == NULL || host_image_build(&spec, image, len) != len) {
            free(image);
            fprintf(stderr, "virtual-esp32: cannot build the built-in image\n");
            return false;
        }
    }
    const bool ok = host_dev_install(&v->dev, 0, image, len, why, sizeof(why));
    free(image);
    if (!ok) {
        fprintf(stderr, "virtual-esp32: %s: not a bootable ESP32 app: %s\n",
                v->image_path != NULL ? v->image_path : "built-in image", why);
    }
    return ok;
}

/* Properties as the line protocol names them: "read,write,notify". */
static void
props_text(uint8_t props, char *out, size_t cap)
{
    static const struct {
        uint8_t bit;
        const char *name;
    } k_names[] = {
        { BLE_OTA_PROP_READ, "read" },
        { BLE_OTA_PROP_WRITE_NO_RSP, "write-without-response" },
        { BLE_OTA_PROP_WRITE, "write" },
        { BLE_OTA_PROP_NOTIFY, "notify" },
    };
    size_t n = 0;

    out[0] = '\0';
    for (size_t i = 0; i < sizeof(k_names) / sizeof(k_names[0]); i++) {
        if (!(props & k_names[i].bit)) {
            continue;
        }
        const int w = snprintf(out + n, cap - n, "%s%s", n > 0 ? "," : "", k_names[i].name);
        if (w < 0 || (size_t)w >= cap - n) {
            return; /* cut short; cap holds every name with room to spare */
        }
        n += (size_t)w;
    }
}

static void
announce(const vesp_t *v)
{
    /* As the firmware advertises it: a name longer than the advertising
     * data holds goes out shortened (ble_ota_bt.h). */
    bool complete = true;
    const size_t name_len = ble_ota_bt_adv_name_len(strlen(v->name), &complete);
    out_line("dev %s %.*s %u", v->address, (int)name_len, v->name, v->mtu);
    /* Seed devices do not advertise the service: found by name only. */
    if (!v->seed_only) {
        out_line("adv %s", BLE_OTA_SERVICE_UUID);
    }
    int svc = -1;
    for (int i = 0; i < BLE_OTA_CHR_COUNT; i++) {
        const ble_ota_chr_def_t *chr = &ble_ota_gatt_chrs[i];
        if (!vesp_serves(v, (ble_ota_chr_t)i)) {
            continue;
        }
        if (svc != (int)chr->svc) {
            svc = (int)chr->svc;
            out_line("svc %s", ble_ota_gatt_svc_uuid[chr->svc]);
        }
        char props[64];
        props_text(chr->props, props, sizeof(props));
        out_line("chr %s %s %s", ble_ota_gatt_svc_uuid[chr->svc], chr->uuid, props);
    }
    out_line("ready");
}

/* --- main loop -------------------------------------------------------------------- */

static char s_line[VESP_LINE_MAX];

int
main(int argc, char **argv)
{
    vesp_t *v = &s_vesp;
    static char chunk[8192];

    const int rc = parse_options(v, argc, argv);
    if (rc != 0) {
        return rc < 0 ? 0 : rc;
    }
    static char out_buf[1 << 16];
    setvbuf(stdout, out_buf, _IOFBF, sizeof(out_buf));

    const host_dev_hooks_t hooks = {
        .notify = hook_notify,
        .log = hook_log,
        .restart = hook_restart,
        .notify_command = hook_notify_command,
        .disconnect = hook_disconnect,
        .link_data_path = hook_link_data_path,
        .link_conn_params = hook_link_conn_params,
        .user = v,
    };
    if (!host_dev_init(&v->dev, v->slot_size, &hooks)) {
        fprintf(stderr, "virtual-esp32: cannot allocate %lu bytes of flash\n",
                (unsigned long)v->slot_size * HOST_FLASH_SLOTS);
        return 1;
    }
    v->dev.chip_id = v->chip_id;
    memcpy(v->dev.device_id, v->device_id, sizeof(v->device_id));
    v->dev.require_signature = v->require_signature;
    if (v->no_deflate) {
        v->dev.port.inflate = NULL;
    }
    if (v->no_delta) {
        v->dev.port.running_read = NULL;
    }
    if (!provision_key(v) || !install_first_image(v)) {
        host_dev_deinit(&v->dev);
        return 1;
    }
    /* Power-on: no `boot` event, the host has not seen `ready` yet. */
    if (host_dev_boot(&v->dev) < 0) {
        fprintf(stderr, "virtual-esp32: the first image does not boot\n");
        host_dev_deinit(&v->dev);
        return 1;
    }
    vesp_core_start(v);
    vesp_self_test(v, v->dev.running);
    /* Installing the first image is no request's flash work. */
    v->reported_erases = v->dev.flash.erases;
    v->reported_blocks = v->dev.flash.block_erases;
    v->reported_pages = v->dev.flash.pages_programmed;
    announce(v);

    size_t line_len = 0;
    bool overlong = false;
    bool running = true;
    bool eof = false;
    while (running && !eof) {
        /* Wake for the next tick, or the restart if it comes sooner. */
        int64_t left = v->next_tick_ms - now_ms();
        if (v->restart_scheduled && v->restart_at_ms - now_ms() < left) {
            left = v->restart_at_ms - now_ms();
        }
        const int timeout = left <= 0 ? 0 : (left > VESP_TICK_MS ? VESP_TICK_MS : (int)left);
        struct pollfd pfd = { .fd = STDIN_FILENO, .events = POLLIN };
        const int ready = poll(&pfd, 1, timeout);
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        vesp_run_timers(v);
        if (ready == 0) {
            continue;
        }

        const ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            break;
        }
        if (n == 0) {
            eof = true;
        }
        for (ssize_t i = 0; i < n && running; i++) {
            const char c = chunk[i];
            if (c != '\n') {
                if (line_len < sizeof(s_line) - 1) {
                    /* A NUL would cut the line short: make it visible instead. */
                    s_line[line_len++] = c == '\0' ? '?' : c;
                } else {
                    overlong = true;
                }
                continue;
            }
            s_line[line_len] = '\0';
            /* A restart that fell due while requests queued up comes first. */
            vesp_run_timers(v);
            if (overlong) {
                vesp_handle_overlong(s_line);
            } else {
                running = vesp_handle_line(v, s_line);
                vesp_after_power_loss(v);
                vesp_after_drop(v);
            }
            line_len = 0;
            overlong = false;
        }
    }
    /* A last request without a newline still counts. */
    if (running && eof && line_len > 0) {
        s_line[line_len] = '\0';
        vesp_run_timers(v);
        if (overlong) {
            vesp_handle_overlong(s_line);
        } else {
            vesp_handle_line(v, s_line);
            vesp_after_power_loss(v);
        }
    }
    out_flush();
    host_dev_deinit(&v->dev);
    return 0;
}
