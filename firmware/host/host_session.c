/*
 * The client's side of an authenticated session: see host_session.h.
 */
#include "host_session.h"

#include <string.h>

#include <zlib.h>

#include "ble_ota_core.h"
#include "ble_ota_sha256.h"
#include "ble_ota_le.h"

void
host_session_device_key(const uint8_t secret[BLE_OTA_AUTH_KEY_LEN], const uint8_t id[BLE_OTA_DEVICE_ID_LEN],
                        uint8_t key[BLE_OTA_AUTH_KEY_LEN])
{
    ble_ota_hmac_sha256(secret, BLE_OTA_AUTH_KEY_LEN, (const uint8_t *)BLE_OTA_DEVICE_KEY_LABEL,
                        sizeof(BLE_OTA_DEVICE_KEY_LABEL) - 1, id, BLE_OTA_DEVICE_ID_LEN, key);
}

void
host_session_key_record(const uint8_t key[BLE_OTA_AUTH_KEY_LEN], const uint8_t id[BLE_OTA_DEVICE_ID_LEN],
                        uint8_t record[BLE_OTA_KEY_RECORD_LEN])
{
    memset(record, 0, BLE_OTA_KEY_RECORD_LEN);
    memcpy(record, BLE_OTA_KEY_MAGIC, 8);
    memcpy(record + 8, id, BLE_OTA_DEVICE_ID_LEN);
    memcpy(record + 16, key, BLE_OTA_AUTH_KEY_LEN);
    ble_ota_put_le32(record + 48, (uint32_t)crc32(0L, record, 48));
}

void
host_session_begin(host_session_t *s, const uint8_t key[BLE_OTA_AUTH_KEY_LEN], const uint8_t id[BLE_OTA_DEVICE_ID_LEN],
                   uint32_t nonce_seed, uint8_t hello[BLE_OTA_HELLO_SIZE])
{
    uint8_t seed[4];

    memset(s, 0, sizeof(*s));
    memcpy(s->device_key, key, sizeof(s->device_key));
    memcpy(s->device_id, id, sizeof(s->device_id));
    ble_ota_put_le32(seed, nonce_seed);
    uint8_t digest[BLE_OTA_SHA256_LEN];
    ble_ota_sha256(seed, sizeof(seed), digest);
    memcpy(s->client_nonce, digest, sizeof(s->client_nonce));
    hello[0] = BLE_OTA_CMD_HELLO;
    memcpy(hello + 1, s->client_nonce, sizeof(s->client_nonce));
}

bool
host_session_hello_answer(host_session_t *s, const uint8_t *answer, size_t len)
{
    uint8_t input[sizeof(BLE_OTA_SESSION_LABEL) - 1 + BLE_OTA_DEVICE_ID_LEN + 2 * BLE_OTA_AUTH_NONCE_LEN];
    size_t n = 0;

    if (len != 2 + BLE_OTA_AUTH_NONCE_LEN || answer[0] != (BLE_OTA_CMD_HELLO | BLE_OTA_ANSWER) ||
        answer[1] != BLE_OTA_ST_OK) {
        return false;
    }
    memcpy(input + n, BLE_OTA_SESSION_LABEL, sizeof(BLE_OTA_SESSION_LABEL) - 1);
    n += sizeof(BLE_OTA_SESSION_LABEL) - 1;
    memcpy(input + n, s->device_id, BLE_OTA_DEVICE_ID_LEN);
    n += BLE_OTA_DEVICE_ID_LEN;
    memcpy(input + n, s->client_nonce, BLE_OTA_AUTH_NONCE_LEN);
    n += BLE_OTA_AUTH_NONCE_LEN;
    memcpy(input + n, answer + 2, BLE_OTA_AUTH_NONCE_LEN);
    n += BLE_OTA_AUTH_NONCE_LEN;
    ble_ota_hmac_sha256(s->device_key, sizeof(s->device_key), input, n, input + n, 0, s->session_key);
    s->seq = 0;
    s->open = true;
    return true;
}

static void
session_mac(const host_session_t *s, uint8_t direction, uint32_t seq, const uint8_t *bytes, size_t len, uint8_t *mac)
{
    uint8_t prefix[5];

    prefix[0] = direction;
    ble_ota_put_le32(prefix + 1, seq);
    ble_ota_hmac_sha256(s->session_key, sizeof(s->session_key), prefix, sizeof(prefix), bytes, len, mac);
}

size_t
host_session_seal(host_session_t *s, uint8_t *request, size_t len)
{
    s->last_seq = s->seq++;
    session_mac(s, BLE_OTA_MAC_REQUEST, s->last_seq, request, len, request + len);
    return len + BLE_OTA_AUTH_MAC_LEN;
}

bool
host_session_answer_ok(const host_session_t *s, const uint8_t *answer, size_t len)
{
    uint8_t mac[BLE_OTA_AUTH_MAC_LEN];

    if (!s->open || len < 2 + BLE_OTA_AUTH_MAC_LEN) {
        return false;
    }
    session_mac(s, BLE_OTA_MAC_ANSWER, s->last_seq, answer, len - BLE_OTA_AUTH_MAC_LEN, mac);
    return memcmp(mac, answer + len - BLE_OTA_AUTH_MAC_LEN, sizeof(mac)) == 0;
}
