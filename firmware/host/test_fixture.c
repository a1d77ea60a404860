/*
 * The unit tests' fixture: see test_fixture.h.
 */
#include "test_fixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ble_ota_le.h"
#include "host_image.h"
#include "test.h"

fixture_t s_fx;
/* Config of the core at every (re)boot; fx_setup() resets it to the defaults. */
ble_ota_config_t s_config;

static void
fx_notify_command(void *user, const uint8_t *data, size_t len)
{
    fixture_t *fx = user;
    if (fx->cmd_count < MAX_CMD_NOTES) {
        cmd_note_t *n = &fx->cmds[fx->cmd_count];
        n->len = len < sizeof(n->data) ? len : sizeof(n->data);
        memcpy(n->data, data, n->len);
    }
    fx->cmd_count++;
}

static void
fx_disconnect(void *user)
{
    fixture_t *fx = user;
    fx->drops++;
}

static uint32_t
fx_now_ms(void *user)
{
    const fixture_t *fx = user;
    return fx->clock_ms;
}

static void
fx_notify(void *user, uint8_t value)
{
    fixture_t *fx = user;
    if (fx->notify_count < MAX_NOTIFY) {
        fx->notified[fx->notify_count] = value;
    }
    fx->notify_count++;
}

static void
fx_log(void *user, ble_ota_log_level_t level, const char *msg)
{
    static const char levels[] = "EWID";
    fixture_t *fx = user;

    if (level == BLE_OTA_LOG_WARN) {
        fx->warnings++;
    } else if (level == BLE_OTA_LOG_ERROR) {
        fx->errors++;
    }
    snprintf(fx->logs[fx->log_count % LOG_RING], sizeof(fx->logs[0]), "%c %s", levels[level & 3], msg);
    fx->log_count++;
    if (getenv("TEST_VERBOSE") != NULL) {
        printf("    log %c %s\n", levels[level & 3], msg);
    }
}

const char *
running_version(void)
{
    static char version[33];
    host_dev_running_version(&s_fx.dev, version);
    return version;
}

void
fx_print_logs(void)
{
    const int first = s_fx.log_count > LOG_RING ? s_fx.log_count - LOG_RING : 0;
    printf("  last device log lines:\n");
    for (int i = first; i < s_fx.log_count; i++) {
        printf("    %s\n", s_fx.logs[i % LOG_RING]);
    }
}

uint8_t s_image[64 * 1024];
size_t s_image_len;

size_t
build_image_of(uint8_t *out, size_t cap, const char *version, uint32_t payload, uint32_t seed, bool compressible)
{
    const host_image_spec_t spec = {
        .project = "virtual-esp32",
        .version = version,
        .payload_len = payload,
        .seed = seed,
        .chip_id = HOST_IMAGE_CHIP_ESP32,
        .hash_appended = true,
        .compressible = compressible,
    };
    return host_image_build(&spec, out, cap);
}

size_t
build_image(uint8_t *out, size_t cap, const char *version, uint32_t payload, uint32_t seed)
{
    return build_image_of(out, cap, version, payload, seed, false);
}

/* A fresh device running a valid 1.0.0 in ota_0, and its core. */
void
fx_setup(void)
{
    static uint8_t first[8 * 1024];
    const host_dev_hooks_t hooks = {
        .notify = fx_notify,
        .log = fx_log,
        .notify_command = fx_notify_command,
        .now_ms = fx_now_ms,
        .disconnect = fx_disconnect,
        .user = &s_fx,
    };
    char why[120];

    host_dev_deinit(&s_fx.dev);
    memset(&s_fx, 0, sizeof(s_fx));
    /* Near the wrap of the 32-bit clock, so every timer crosses it. */
    s_fx.clock_ms = 0xFFFFF000u;
    ble_ota_config_default(&s_config);
    if (!host_dev_init(&s_fx.dev, SLOT_SIZE, &hooks)) {
        test_fail(__FILE__, __LINE__, "host_dev_init");
        return;
    }
    const size_t len = build_image(first, sizeof(first), "1.0.0", 3000, 1);
    if (len == 0 || !host_dev_install(&s_fx.dev, 0, first, len, why, sizeof(why))) {
        test_failf(__FILE__, __LINE__, "install: %s", why);
        return;
    }
    if (host_dev_boot(&s_fx.dev) != 0) {
        test_fail(__FILE__, __LINE__, "first boot");
        return;
    }
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    ble_ota_core_confirm_boot(&s_fx.core, true);
    ble_ota_core_connected(&s_fx.core);
    s_image_len = build_image(s_image, sizeof(s_image), "2.0.0", 20000, 2);
}

/* Restart as the virtual device does: boot, fresh core, confirm. */
int
fx_reboot(bool self_test)
{
    const int slot = host_dev_boot(&s_fx.dev);
    ble_ota_core_init(&s_fx.core, &s_fx.dev.port, &s_config);
    ble_ota_core_confirm_boot(&s_fx.core, self_test);
    ble_ota_core_connected(&s_fx.core);
    return slot;
}

void
fx_reconnect(void)
{
    ble_ota_core_disconnected(&s_fx.core);
    ble_ota_core_connected(&s_fx.core);
}

uint8_t
last_notify(void)
{
    return s_fx.notify_count == 0 ? 0xFF : s_fx.notified[(s_fx.notify_count - 1) % MAX_NOTIFY];
}

ble_ota_status_t
ctrl(uint8_t value)
{
    return ble_ota_core_control_write(&s_fx.core, &value, 1);
}

ble_ota_status_t
packet_size(uint16_t size)
{
    uint8_t le[2];
    ble_ota_put_le16(le, size);
    return ble_ota_core_data_write(&s_fx.core, le, 2);
}

/* Writes data in packets of packet bytes; the first error ends it. */
ble_ota_status_t
send_packets(const uint8_t *data, size_t len, size_t packet)
{
    for (size_t off = 0; off < len; off += packet) {
        const size_t n = len - off < packet ? len - off : packet;
        const ble_ota_status_t st = ble_ota_core_data_write(&s_fx.core, data + off, n);
        if (st != BLE_OTA_OK) {
            return st;
        }
    }
    return BLE_OTA_OK;
}

/* The seed client's whole sequence; checks every answer. */
void
upload(const uint8_t *data, size_t len, uint16_t packet)
{
    CHECK_EQ(packet_size(packet), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_REQUEST_ACK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_RECEIVING);
    CHECK_EQ(send_packets(data, len, packet), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_ACK);
    CHECK_EQ(s_fx.core.state, BLE_OTA_STATE_RESTARTING);
}
