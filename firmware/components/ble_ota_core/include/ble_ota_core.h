/*
 * Portable OTA core: the protocol state machine behind the OTA service.
 *
 * The GATT layer (NimBLE on the ESP32, the line protocol of the virtual
 * ESP32 on a host) only translates GATT events into these calls and maps the
 * returned status to an ATT error with ble_ota_status_to_att(). The core
 * allocates nothing: its buffers (protocol v2's flash block, the DEFLATE
 * chunk and dictionary) and the SHA-256 state live in ble_ota_core_t, so
 * the caller decides where (a static on the ESP32; its size: docs/PERFORMANCE.md,
 * *The firmware's RAM*). The core takes no lock: calls must not overlap (the
 * ESP32 firmware makes them from several tasks under one mutex,
 * firmware/main/ota_task.c).
 */
#ifndef BLE_OTA_CORE_H
#define BLE_OTA_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_delta.h"
#include "ble_ota_link.h"
#include "ble_ota_port.h"
#include "ble_ota_protocol.h"
#include "ble_ota_sha256.h"

typedef enum {
    BLE_OTA_STATE_IDLE = 0,   /* no transfer; Data takes the packet size */
    BLE_OTA_STATE_RECEIVING,  /* after REQUEST_ACK: Data takes firmware */
    BLE_OTA_STATE_RESTARTING, /* after DONE_ACK: restart scheduled */
} ble_ota_state_t;

/* Result of a GATT write handled by the core. */
typedef enum {
    BLE_OTA_OK = 0,
    BLE_OTA_ERR_LENGTH,        /* value length not allowed here */
    BLE_OTA_ERR_VALUE,         /* unknown control value, packet size out of range */
    BLE_OTA_ERR_NOT_RECEIVING, /* firmware data outside a transfer */
    BLE_OTA_ERR_FLASH,         /* the port failed to store the data */
    BLE_OTA_ERR_BUSY,          /* restart pending */
    BLE_OTA_ERR_NOT_SERVED,    /* seed protocol write on a build that does not serve it */
} ble_ota_status_t;

/* Platform choices for protocol v2. */
typedef struct {
    uint16_t window;             /* bytes a client may stream unacknowledged (what the device can queue) */
    uint16_t max_packet;         /* largest OTA Stream value taken, header included */
    uint32_t abandon_timeout_ms; /* a suspended transfer is aborted after this */
    uint32_t confirm_window_ms;  /* a new image awaiting CONFIRM is rolled back after this; 0: no limit */
    bool serve_seed;             /* the seed protocol is served (OTA Info feature SEED); it has no authentication */
    bool auth;                   /* v2 requests need a session MAC (OTA Info feature AUTH) */
    /* The device key (derived from the owner's fleet secret and the device
     * id; provisioned into storage no firmware image carries). With auth
     * and no key, HELLO answers NOT_PROVISIONED: nobody can update. */
    bool auth_key_set;
    uint8_t auth_key[BLE_OTA_AUTH_KEY_LEN];
    uint32_t auth_timeout_ms; /* a link not authenticated by then is dropped; 0: BLE_OTA_AUTH_TIMEOUT_MS */
} ble_ota_config_t;

/* 32 KB: the client keeps sending through a 64 KB block erase (150 ms) and
 * the ACK that follows it (docs/PERFORMANCE.md: with DEFLATE, 16 KB left
 * the link idle behind each erase). */
#define BLE_OTA_DEFAULT_WINDOW 32768
/* The device ACKs each window / BLE_OTA_ACKS_PER_WINDOW bytes: often
 * enough that a client keeps sending while the device's flash stalls it
 * (docs/PERFORMANCE.md: 4 per window left the link idle behind each block
 * erase), rarely enough that ACKs cost little air (one 12-byte PDU per 2 KB). */
#define BLE_OTA_ACKS_PER_WINDOW           8u
#define BLE_OTA_DEFAULT_CONFIRM_WINDOW_MS 300000u /* Kconfig BLE_OTA_CONFIRM_WINDOW_S default */

/* Defaults: window 32 KB, max_packet BLE_OTA_MAX_PACKET, abandon
 * BLE_OTA_ABANDON_TIMEOUT_MS, confirm window 300 s, seed served, no key. */
void ble_ota_config_default(ble_ota_config_t *config);

/* Bytes at the start of an image the core checks before the image may be
 * selected, in either protocol: the 24-byte image header, the first
 * segment's header, and the app descriptor's (esp_app_desc_t, at offset
 * 0x20) magic word and secure_version. */
#define BLE_OTA_IMAGE_HEAD_LEN 40

/* A v2 transfer (docs/PROTOCOL.md, OTA Info transfer_state). */
typedef enum {
    BLE_OTA_V2_IDLE = BLE_OTA_TRANSFER_IDLE,
    BLE_OTA_V2_RECEIVING = BLE_OTA_TRANSFER_RECEIVING, /* slot open, stream taken */
    BLE_OTA_V2_SUSPENDED = BLE_OTA_TRANSFER_SUSPENDED, /* link lost: slot, hash and block kept for a resume */
    BLE_OTA_V2_COMPLETE = BLE_OTA_TRANSFER_COMPLETE,   /* END OK: image valid; RESTART selects and boots it */
} ble_ota_v2_state_t;

typedef struct {
    ble_ota_v2_state_t state;
    uint32_t size;                      /* BEGIN's image size */
    uint8_t sha256[BLE_OTA_SHA256_LEN]; /* BEGIN's digest */
    uint16_t flags;                     /* BEGIN's flags */
    uint32_t received;                  /* next expected stream offset: every byte below is taken */
    uint32_t stored;                    /* image bytes in flash or the block (== received without DEFLATE) */
    bool deflate;                       /* BEGIN flag DEFLATE: the stream is deflated chunks */
    uint32_t chunk_start;               /* DEFLATE: stream offset where the chunk being assembled began */
    uint16_t chunk_len;                 /* DEFLATE: its encoded length, once its 2-byte header arrived */
    uint32_t chunk_fill;                /* DEFLATE: its bytes in chunk, header included */
    uint8_t chunk[2 + BLE_OTA_DEFLATE_CHUNK];
    uint32_t acked;         /* offset of the last ACK (or of BEGIN's answer) */
    uint32_t resync_offset; /* the expected offset a RESYNC went out for */
    bool resync_sent;
    bool restart_requested;    /* RESTART selected the image: the slot boots next */
    bool restart_scheduled;    /* the port's restart was asked for */
    uint32_t suspended_at_ms;  /* port now_ms() when the link dropped, or when END completed */
    ble_ota_sha256_ctx_t hash; /* of bytes [0, received) */
    uint32_t block_offset;     /* image offset of block[0]; bytes below are in flash */
    uint32_t block_fill;       /* bytes in block */
    /* PATCH (docs/DELTA.md): the stream is a delta patch, deflated, one
     * 4 KB patch block per chunk. Each chunk inflates into block (its
     * dictionary, the patch block before, in history), moves to history,
     * and goes through the applier, whose rebuilt bytes fill block as the
     * image's would; block goes to flash when full and at every chunk's end
     * (the next chunk inflates there), so no second 4 KB buffer is needed. */
    bool patch;
    uint8_t base_sha256[BLE_OTA_SHA256_LEN]; /* BEGIN's: the running image the patch applies to */
    uint32_t patch_in; /* patch bytes the applier took: whole blocks, as only whole chunks go in */
    /* The rebuilt image's first bytes at a chunk's end while they are fewer
     * than the image check needs before the first write (rare: a first
     * patch block that rebuilds under 40 bytes). */
    uint8_t head_hold[BLE_OTA_IMAGE_HEAD_LEN];
    ble_ota_delta_t delta;
    /* DEFLATE: the image's previous chunk, the dictionary of the next one.
     * It sits right before block, where an inflater looks for it. */
    uint8_t history[BLE_OTA_DEFLATE_CHUNK];
    uint8_t block[BLE_OTA_FLASH_BLOCK]; /* written to the slot in whole blocks */
} ble_ota_v2_t;

/* How often a link the core asked the port to end is asked again while it
 * stays up (ble_ota_auth_tick). */
#define BLE_OTA_AUTH_DROP_RETRY_MS 1000

/* The client's link and its authentication (ble_ota_auth.c). Everything
 * here belongs to one link and ends with it: what a stranger does on its
 * own link never locks out the next one. */
typedef struct {
    bool connected;
    uint32_t connected_at_ms;
    bool session; /* HELLO answered: session_key and seq are set */
    uint8_t session_key[BLE_OTA_SHA256_LEN];
    uint32_t seq;        /* sequence number the next request must carry */
    bool authenticated;  /* a request with a valid MAC arrived on this link */
    bool answer_signed;  /* the request being handled verified: its answer carries a MAC */
    uint32_t answer_seq; /* that request's sequence number */
    uint8_t failures;    /* on this link */
    uint32_t lock_ms;    /* 0: not locked */
    uint32_t locked_at_ms;
    bool dropping;          /* the port was asked to end this link */
    uint32_t dropped_at_ms; /* when the port was first asked */
    uint32_t drop_asked_ms; /* when it was last asked (asked again each second until the link ends) */
} ble_ota_auth_t;

typedef struct {
    const ble_ota_port_t *port;
    ble_ota_config_t config;
    /* seed protocol */
    ble_ota_state_t state;
    uint8_t control;                      /* last control value, returned by a read */
    uint16_t packet_size;                 /* announced by the client, 0 until then */
    uint32_t received;                    /* firmware bytes stored in this transfer */
    uint32_t packets;                     /* firmware packets stored in this transfer */
    uint8_t head[BLE_OTA_IMAGE_HEAD_LEN]; /* the transfer's first bytes, checked at DONE */
    /* protocol v2 */
    ble_ota_v2_t v2;
    uint8_t last_status;     /* OTA Info last_status, BLE_OTA_LAST_STATUS_NONE at boot */
    bool confirm_waiting;    /* the running image waits for CONFIRM */
    bool self_test_passed;   /* confirm_boot() saw the running image's self-test pass */
    bool rollback_requested; /* port rollback() called: nothing may start until the restart */
    /* The confirm window counts the time the owner could have confirmed:
     * not while a link that has not authenticated holds the device (one
     * link at a time), so strangers cannot run it out. */
    uint32_t confirm_elapsed_ms;
    uint32_t confirm_counted_at_ms; /* port now_ms() up to which confirm_elapsed_ms counts */
    ble_ota_auth_t auth;
    ble_ota_link_t link; /* what was asked of the link (ble_ota_link.c) */
    /* The image in the running slot as a file holds it, found at init
     * (OTA Info running_size, running_sha256; the base of a delta patch).
     * running_size 0: not known. */
    uint32_t running_size;
    uint8_t running_sha256[BLE_OTA_SHA256_LEN];
} ble_ota_core_t;

/* config NULL: the defaults. A zero window, max_packet or abandon timeout
 * takes its default; max_packet is capped at BLE_OTA_MAX_PACKET (the core
 * takes any length, the ATT layer not). Call at boot, before
 * ble_ota_core_confirm_boot(): it reads the running image whole (port
 * running_read) for its size and SHA-256. */
void ble_ota_core_init(ble_ota_core_t *core, const ble_ota_port_t *port, const ble_ota_config_t *config);

/* A client wrote len bytes to OTA Control. REQUEST and DONE answer with a
 * notification (REQUEST_ACK/NAK, DONE_ACK/NAK) through the port. */
ble_ota_status_t ble_ota_core_control_write(ble_ota_core_t *core, const uint8_t *data, size_t len);

/* Value returned by a read of OTA Control. */
uint8_t ble_ota_core_control_read(const ble_ota_core_t *core);

/* A client wrote len bytes to OTA Data. */
ble_ota_status_t ble_ota_core_data_write(ble_ota_core_t *core, const uint8_t *data, size_t len);

/* A client connected. On a device with authentication, the link must
 * authenticate within config.auth_timeout_ms, or tick() ends it. */
void ble_ota_core_connected(ble_ota_core_t *core);

/* The client's link dropped: a seed transfer in progress is aborted, so the
 * slot is freed and the next REQUEST starts clean; a v2 transfer is
 * suspended, for a BEGIN of the same image to resume it (ble_ota_core_tick
 * aborts it after the abandon timeout). */
void ble_ota_core_disconnected(ble_ota_core_t *core);

/* --- protocol v2 (docs/PROTOCOL.md) --- */

/* A client wrote to OTA Command. Answers go out as notifications; the
 * returned status only fails the write for a value that has no answer: an
 * empty one (BLE_OTA_ERR_LENGTH), or one whose first byte is above 0x3F, the
 * request range (BLE_OTA_ERR_VALUE), whose answer would read as an event. */
ble_ota_status_t ble_ota_core_command_write(ble_ota_core_t *core, const uint8_t *data, size_t len);

/* A client wrote to OTA Stream (offset u32 + bytes). Never fails the write:
 * problems are reported by RESYNC / FAILED events. */
ble_ota_status_t ble_ota_core_stream_write(ble_ota_core_t *core, const uint8_t *data, size_t len);

/* The OTA Info value; returns its length (BLE_OTA_INFO_SIZE), or 0 when cap is too small. */
size_t ble_ota_core_info_read(ble_ota_core_t *core, uint8_t *out, size_t cap);

/* Timers: aborts a suspended transfer after the abandon timeout, rolls back
 * an unconfirmed image after the confirm window, ends a link that did not
 * authenticate in time. Call every 100-1000 ms (more often only sharpens
 * the timeouts). */
void ble_ota_core_tick(ble_ota_core_t *core);

/* Called once at boot, after the application's self-test (BLE stack up and
 * the OTA service registered, on the ESP32). A new image that failed is
 * rolled back; one that passed is marked valid, unless a client was to
 * confirm it (BEGIN flag CLIENT_CONFIRM): then it stays pending verify until
 * CONFIRM or the confirm window ends. Call after ble_ota_core_init().
 * Returns the state the running image had before the call. */
ble_ota_img_state_t ble_ota_core_confirm_boot(ble_ota_core_t *core, bool self_test_passed);

/* Idle work (ble_ota_prepare.c): erases one step of the slot the next
 * update goes to (port slot_prepare), when nothing may need the slot as it
 * is: no transfer of either protocol under way, suspended or complete, no
 * restart pending, and the running image confirmed (a pending-verify
 * image's rollback goes to that slot). Call when the device has nothing
 * else to do (the OTA task: its queue empty); a transfer's packets go
 * first. Returns true while more is left: call again soon. */
bool ble_ota_core_idle(ble_ota_core_t *core);

/* The key partition (docs/SECURITY.md): where the device key lives, apart
 * from any firmware image. Its first bytes:
 *   0  8   magic "BLEOTAK1"
 *   8  6   device id the key was derived for
 *   14 2   reserved, 0
 *   16 32  device key
 *   48 4   CRC-32 (IEEE, as zlib) of bytes 0-47
 * The rest of the partition is 0xFF. */
#define BLE_OTA_KEY_RECORD_LEN 52
#define BLE_OTA_KEY_MAGIC      "BLEOTAK1"

typedef enum {
    BLE_OTA_KEY_OK = 0,
    BLE_OTA_KEY_EMPTY,       /* erased: never provisioned */
    BLE_OTA_KEY_CORRUPT,     /* not a key record, or its CRC fails */
    BLE_OTA_KEY_OTHER_DEVICE /* made for another device id */
} ble_ota_key_status_t;

/* Reads a key record (len bytes from the partition's start) for the
 * device with this id; the key goes to key only with BLE_OTA_KEY_OK. */
ble_ota_key_status_t ble_ota_key_record_parse(const uint8_t *record, size_t len,
                                              const uint8_t device_id[BLE_OTA_DEVICE_ID_LEN],
                                              uint8_t key[BLE_OTA_AUTH_KEY_LEN]);

/* The authentication settings a device boots with, from what its key
 * partition held (key: ble_ota_key_record_parse's result, which put the key
 * into config->auth_key when BLE_OTA_KEY_OK): requests need a session,
 * unless the build takes updates from anyone while no key is provisioned
 * (allow_unauthenticated: CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED) and none
 * is. With auth and no key, HELLO answers NOT_PROVISIONED: nobody can
 * update. The ESP32 firmware and the virtual ESP32 both decide it here. */
void ble_ota_config_key(ble_ota_config_t *config, ble_ota_key_status_t key, bool allow_unauthenticated);

/* ATT error code a GATT layer returns for a status (0 for BLE_OTA_OK). */
uint8_t ble_ota_status_to_att(ble_ota_status_t status);

#endif /* BLE_OTA_CORE_H */
