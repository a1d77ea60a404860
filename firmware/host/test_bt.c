/*
 * What the Bluetooth glue decides (ble_ota_bt.c): which writes fail before
 * the core sees them, how a notification without a buffer is tried again,
 * how much of the name is advertised. The core's own refusals of the same
 * OTA Command values are in test_v2.c.
 */
#include "test_bt.h"

#include <string.h>

#include "ble_ota_bt.h"
#include "ble_ota_link.h"
#include "test.h"

static void
test_bt_write_lengths(void)
{
    /* The seed's client at MTU 517 writes 514-byte packets: taken. NimBLE
     * hands longer ones at a larger MTU (up to 524): refused, not cut. */
    CHECK_EQ(ble_ota_bt_write_check(0), 0);
    CHECK_EQ(ble_ota_bt_write_check(BLE_OTA_MAX_PACKET), 0);
    CHECK_EQ(ble_ota_bt_write_check(BLE_OTA_MAX_PACKET + 1), BLE_OTA_ATT_ERR_INVALID_LEN);
    CHECK_EQ(ble_ota_bt_write_check(524), BLE_OTA_ATT_ERR_INVALID_LEN);
}

static void
test_bt_command_check(void)
{
    uint8_t v[1] = { 0 };

    /* Empty: Invalid Attribute Value Length; above the request range:
     * 0x82; every request opcode reaches the core. */
    CHECK_EQ(ble_ota_bt_command_check(v, 0), BLE_OTA_ERR_LENGTH);
    CHECK_EQ(ble_ota_bt_command_check(NULL, 0), BLE_OTA_ERR_LENGTH);
    CHECK_EQ(ble_ota_status_to_att(ble_ota_bt_command_check(v, 0)), BLE_OTA_ATT_ERR_INVALID_LEN);
    for (unsigned op = 0; op <= 0xFF; op++) {
        v[0] = (uint8_t)op;
        const ble_ota_status_t st = ble_ota_bt_command_check(v, 1);
        CHECK_EQ(st, op <= BLE_OTA_OPCODE_MAX ? BLE_OTA_OK : BLE_OTA_ERR_VALUE);
    }
    v[0] = BLE_OTA_EVT_ACK;
    CHECK_EQ(ble_ota_status_to_att(ble_ota_bt_command_check(v, 1)), BLE_OTA_ATT_ERR_BAD_VALUE);
}

/* A stack that has no buffer for the first `busy` attempts. */
typedef struct {
    unsigned busy;
    unsigned calls;
    uint32_t waited_ms;
    bool fail;
} fake_stack_t;

static ble_ota_notify_result_t
fake_send(void *ctx)
{
    fake_stack_t *f = ctx;

    f->calls++;
    if (f->fail) {
        return BLE_OTA_NOTIFY_FAILED;
    }
    if (f->busy > 0) {
        f->busy--;
        return BLE_OTA_NOTIFY_NO_BUFFER;
    }
    return BLE_OTA_NOTIFY_SENT;
}

static void
fake_wait(void *ctx, uint32_t ms)
{
    fake_stack_t *f = ctx;

    f->waited_ms += ms;
}

static void
test_bt_notification_retries(void)
{
    fake_stack_t f = { 0 };
    const ble_ota_notifier_t n = { fake_send, fake_wait, &f };
    unsigned attempts = 0;

    /* A buffer at once: sent, no wait. */
    CHECK_EQ(ble_ota_bt_notify(&n, true, &attempts), BLE_OTA_NOTIFY_SENT);
    CHECK_EQ(attempts, 1);
    CHECK_EQ(f.waited_ms, 0);

    /* The OTA task waits for the host to free one, within the attempts. */
    f = (fake_stack_t){ .busy = BLE_OTA_NOTIFY_ATTEMPTS - 1 };
    CHECK_EQ(ble_ota_bt_notify(&n, true, &attempts), BLE_OTA_NOTIFY_SENT);
    CHECK_EQ(attempts, BLE_OTA_NOTIFY_ATTEMPTS);
    CHECK_EQ(f.waited_ms, (BLE_OTA_NOTIFY_ATTEMPTS - 1) * BLE_OTA_NOTIFY_RETRY_MS);
    f = (fake_stack_t){ .busy = BLE_OTA_NOTIFY_ATTEMPTS };
    CHECK_EQ(ble_ota_bt_notify(&n, true, &attempts), BLE_OTA_NOTIFY_NO_BUFFER);
    CHECK_EQ(f.calls, BLE_OTA_NOTIFY_ATTEMPTS);

    /* The host task never waits: it frees the buffers itself. */
    f = (fake_stack_t){ .busy = 1 };
    CHECK_EQ(ble_ota_bt_notify(&n, false, &attempts), BLE_OTA_NOTIFY_NO_BUFFER);
    CHECK_EQ(attempts, 1);
    CHECK_EQ(f.waited_ms, 0);

    /* Another failure is not retried. */
    f = (fake_stack_t){ .fail = true };
    CHECK_EQ(ble_ota_bt_notify(&n, true, NULL), BLE_OTA_NOTIFY_FAILED);
    CHECK_EQ(f.calls, 1);

    /* The retries span two connection events of the transfer's longest
     * interval (1.25 ms units), so the controller has sent (and the host
     * freed) what filled the pool. */
    const ble_ota_conn_params_t *transfer = ble_ota_link_params(BLE_OTA_LINK_TRANSFER);
    CHECK((BLE_OTA_NOTIFY_ATTEMPTS - 1) * BLE_OTA_NOTIFY_RETRY_MS * 4 >= 2u * transfer->itvl_max * 5u);
}

static void
test_bt_advertised_name(void)
{
    bool complete = false;

    CHECK_EQ(ble_ota_bt_adv_name_len(5, &complete), 5); /* "esp32" */
    CHECK(complete);
    CHECK_EQ(ble_ota_bt_adv_name_len(BLE_OTA_ADV_NAME_MAX, &complete), BLE_OTA_ADV_NAME_MAX);
    CHECK(complete);
    CHECK_EQ(ble_ota_bt_adv_name_len(BLE_OTA_ADV_NAME_MAX + 1, &complete), BLE_OTA_ADV_NAME_MAX);
    CHECK(!complete);
    /* Flags (3), TX power (3), the name's header (2) and the name fill the
     * 31-byte legacy advertising data exactly. */
    CHECK_EQ(3 + 3 + 2 + BLE_OTA_ADV_NAME_MAX, 31);
}

void
test_bt_run_all(void)
{
    RUN(test_bt_write_lengths);
    RUN(test_bt_command_check);
    RUN(test_bt_notification_retries);
    RUN(test_bt_advertised_name);
}
