/*
 * The client's side of an authenticated session (docs/PROTOCOL.md,
 * "Authentication"), in C: what the unit tests, the fuzzer and the smoke
 * test send to a device with authentication. The TypeScript client has its
 * own (lib/client/session.ts); both follow the same text.
 */
#ifndef HOST_SESSION_H
#define HOST_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_core.h"

typedef struct {
    uint8_t device_key[BLE_OTA_AUTH_KEY_LEN];
    uint8_t device_id[BLE_OTA_DEVICE_ID_LEN];
    uint8_t client_nonce[BLE_OTA_AUTH_NONCE_LEN];
    uint8_t session_key[32];
    uint32_t seq;      /* the next request's */
    uint32_t last_seq; /* the last sealed request's: its answer's */
    bool open;
} host_session_t;

/* device key = HMAC-SHA256(fleet secret, "BLE-OTA device key" || device id). */
void host_session_device_key(const uint8_t secret[BLE_OTA_AUTH_KEY_LEN], const uint8_t id[BLE_OTA_DEVICE_ID_LEN],
                             uint8_t key[BLE_OTA_AUTH_KEY_LEN]);

/* A key partition image (BLE_OTA_KEY_RECORD_LEN bytes; the rest of the
 * partition is 0xFF) holding key for the device id. */
void host_session_key_record(const uint8_t key[BLE_OTA_AUTH_KEY_LEN], const uint8_t id[BLE_OTA_DEVICE_ID_LEN],
                             uint8_t record[BLE_OTA_KEY_RECORD_LEN]);

/* Starts a session for a device: key and id set, a client nonce chosen
 * (deterministic from nonce_seed, which is what tests want). Writes the
 * HELLO request (BLE_OTA_HELLO_SIZE bytes) into hello. */
void host_session_begin(host_session_t *s, const uint8_t key[BLE_OTA_AUTH_KEY_LEN],
                        const uint8_t id[BLE_OTA_DEVICE_ID_LEN], uint32_t nonce_seed,
                        uint8_t hello[BLE_OTA_HELLO_SIZE]);

/* Takes HELLO's answer (opcode, status, device nonce); false unless OK. */
bool host_session_hello_answer(host_session_t *s, const uint8_t *answer, size_t len);

/* Appends the MAC to a request of len bytes (room for BLE_OTA_AUTH_MAC_LEN
 * more); returns the new length. */
size_t host_session_seal(host_session_t *s, uint8_t *request, size_t len);

/* True when answer (len bytes, MAC included) carries the MAC of the last
 * sealed request's sequence number. */
bool host_session_answer_ok(const host_session_t *s, const uint8_t *answer, size_t len);

#endif /* HOST_SESSION_H */
