/*
 * Authenticated v2 commands (docs/PROTOCOL.md, "Authentication").
 *
 * With a key configured, every OTA Command request but CHALLENGE ends with
 * a 32-byte MAC: HMAC-SHA256(key, challenge || request without the MAC),
 * where challenge is the last one this device handed out on this link. A
 * challenge serves one request, whatever its outcome, and dies with the
 * link, so a recorded request never passes twice. BEGIN's MAC covers the
 * image's size, SHA-256, chip and flags: a valid answer cannot be moved to
 * another image.
 *
 * Repeated failures lock authentication for a while (doubling up to
 * BLE_OTA_AUTH_LOCK_MAX_MS), which bounds how fast anyone in range can try
 * keys and how much of the device's time such tries take.
 */
#include <string.h>

#include "ble_ota_core.h"
#include "ble_ota_internal.h"

/* Failures in a row tolerated before the first lock. */
#define BLE_OTA_AUTH_FREE_TRIES 3
#define BLE_OTA_AUTH_LOCK_MIN_MS 1000u

bool
ble_ota_equal_ct(const uint8_t *a, const uint8_t *b, size_t len)
{
    /* Every byte is looked at whatever differs: the time says nothing about
     * where the first wrong byte is. */
    volatile uint8_t diff = 0;

    for (size_t i = 0; i < len; i++) {
        diff |= (uint8_t)(a[i] ^ b[i]);
    }
    return diff == 0;
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool
ble_ota_auth_key_from_hex(const char *hex, uint8_t key[BLE_OTA_AUTH_KEY_LEN])
{
    if (hex == NULL || strlen(hex) != 2 * BLE_OTA_AUTH_KEY_LEN) {
        return false;
    }
    for (size_t i = 0; i < BLE_OTA_AUTH_KEY_LEN; i++) {
        const int hi = hex_value(hex[2 * i]);
        const int lo = hex_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        key[i] = (uint8_t)((hi << 4) | lo);
    }
    return true;
}

/* Milliseconds the lock still lasts, 0 when there is none. */
static uint32_t
auth_lock_left(ble_ota_core_t *core)
{
    ble_ota_auth_t *a = &core->auth;

    if (a->lock_ms == 0) {
        return 0;
    }
    const uint32_t elapsed = core->port->now_ms(core->port->ctx) - a->locked_at_ms;
    if (elapsed >= a->lock_ms) {
        a->lock_ms = 0; /* failures stay counted: the next one locks for longer */
        return 0;
    }
    return a->lock_ms - elapsed;
}

static void
auth_failed(ble_ota_core_t *core, const char *why)
{
    ble_ota_auth_t *a = &core->auth;

    if (a->failures < UINT8_MAX) {
        a->failures++;
    }
    if (a->failures > BLE_OTA_AUTH_FREE_TRIES) {
        const unsigned shift = a->failures - BLE_OTA_AUTH_FREE_TRIES - 1u;
        uint32_t lock = BLE_OTA_AUTH_LOCK_MAX_MS;
        if (shift < 16 && (BLE_OTA_AUTH_LOCK_MIN_MS << shift) < BLE_OTA_AUTH_LOCK_MAX_MS) {
            lock = BLE_OTA_AUTH_LOCK_MIN_MS << shift;
        }
        a->lock_ms = lock;
        a->locked_at_ms = core->port->now_ms(core->port->ctx);
    }
    ble_ota_log(core->port, BLE_OTA_LOG_WARN, "authentication failed (%s), %u in a row%s", why,
                (unsigned)a->failures, a->lock_ms != 0 ? ": locked" : "");
}

size_t
ble_ota_auth_challenge(ble_ota_core_t *core, uint8_t *answer, size_t cap)
{
    ble_ota_auth_t *a = &core->auth;

    if (cap < 2 + BLE_OTA_AUTH_CHALLENGE_LEN) {
        return 0;
    }
    answer[0] = BLE_OTA_CMD_CHALLENGE | BLE_OTA_ANSWER;
    const uint32_t left = auth_lock_left(core);
    if (left != 0) {
        answer[1] = BLE_OTA_ST_AUTH_LOCKED;
        answer[2] = (uint8_t)left;
        answer[3] = (uint8_t)(left >> 8);
        answer[4] = (uint8_t)(left >> 16);
        answer[5] = (uint8_t)(left >> 24);
        return 6;
    }
    core->port->random(core->port->ctx, a->challenge, sizeof(a->challenge));
    a->challenge_valid = true;
    answer[1] = BLE_OTA_ST_OK;
    memcpy(answer + 2, a->challenge, sizeof(a->challenge));
    return 2 + BLE_OTA_AUTH_CHALLENGE_LEN;
}

uint8_t
ble_ota_auth_check(ble_ota_core_t *core, const uint8_t *request, size_t len, size_t base_len)
{
    ble_ota_auth_t *a = &core->auth;
    uint8_t mac[BLE_OTA_SHA256_LEN];

    if (!core->config.auth) {
        return len == base_len ? BLE_OTA_ST_OK : BLE_OTA_ST_BAD_LENGTH;
    }
    if (len == base_len) {
        return BLE_OTA_ST_AUTH_REQUIRED;
    }
    if (len != base_len + BLE_OTA_AUTH_MAC_LEN) {
        return BLE_OTA_ST_BAD_LENGTH;
    }
    if (auth_lock_left(core) != 0) {
        a->challenge_valid = false;
        return BLE_OTA_ST_AUTH_LOCKED;
    }
    if (!a->challenge_valid) {
        auth_failed(core, "no challenge");
        return BLE_OTA_ST_AUTH_FAILED;
    }
    /* Used up whatever the outcome: one challenge, one try. */
    a->challenge_valid = false;
    ble_ota_hmac_sha256(core->config.auth_key, sizeof(core->config.auth_key), a->challenge,
                        sizeof(a->challenge), request, base_len, mac);
    const bool ok = ble_ota_equal_ct(mac, request + base_len, sizeof(mac));
    if (!ok) {
        auth_failed(core, "wrong MAC");
        return BLE_OTA_ST_AUTH_FAILED;
    }
    a->failures = 0;
    return BLE_OTA_ST_OK;
}

void
ble_ota_auth_disconnected(ble_ota_core_t *core)
{
    core->auth.challenge_valid = false;
}
