/*
 * The queue between the Bluetooth stack and the core, for a platform where
 * the core runs in a task of its own (the ESP32: firmware/main/ota_task.c).
 *
 * A port helper, like ble_ota_slot.h: the decisions are here, where the
 * host tests check them (and the virtual ESP32 frames its writes the same
 * way); the ESP32 glue only stores the items in a FreeRTOS message buffer.
 *
 * - Sizing: the queue holds a whole window (the bytes a client may stream
 *   beyond the last ACK) at any ATT MTU of 71 or more, plus room kept free
 *   for two of the longest requests, so ABORT or END still get through
 *   while a window is queued. A buffer that stores each item with a length
 *   prefix of `prefix` bytes (a FreeRTOS message buffer:
 *   sizeof(configMESSAGE_BUFFER_LENGTH_TYPE)) costs prefix + header + value
 *   bytes per item, so smaller packets cost relatively more; at MTU 23 it
 *   holds about 11 KB of stream, and a client that really fills it loses
 *   packets the core's RESYNC has sent again.
 * - Admission: a Stream packet only while the reserve stays free; a request
 *   whenever it fits.
 * - Framing: kind, a reserved byte and the link the write arrived on (u16),
 *   then the value. An item from a link that has dropped since is
 *   discarded (its client cannot get the answer; the next client might).
 * - The link count: bumped by the Bluetooth task on every connect and
 *   disconnect (odd while a link is up), caught up by whoever enters the
 *   core next, so the Bluetooth task never waits for the core.
 */
#ifndef BLE_OTA_QUEUE_H
#define BLE_OTA_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_core.h"
#include "ble_ota_protocol.h"

/* Item header: kind u8, reserved u8, link stamp u16 (little-endian). */
#define BLE_OTA_QUEUE_ITEM_HEADER 4u
#define BLE_OTA_QUEUE_ITEM_MAX    (BLE_OTA_QUEUE_ITEM_HEADER + BLE_OTA_MAX_PACKET)

/* What an item with a value of len bytes costs in a buffer that stores
 * each item after a length of prefix bytes. */
#define BLE_OTA_QUEUE_ITEM_COST(prefix, len) ((prefix) + BLE_OTA_QUEUE_ITEM_HEADER + (len))

/* The queue holds a full window of Stream packets carrying at least this
 * many image bytes (ATT MTU 71 and up; clients use 185, 247 or 517). */
#define BLE_OTA_QUEUE_FULL_WINDOW_MIN_DATA 64u

/* A client sends while `next - acked < window`, so its last packet may end
 * up to data - 1 bytes past the window: ceil((window + data - 1) / data)
 * packets of data image bytes each. */
#define BLE_OTA_QUEUE_WINDOW_PACKETS(window, data) (((window) + 2u * (data)-2u) / (data))
#define BLE_OTA_QUEUE_WINDOW_BYTES(prefix, window, data) \
    (BLE_OTA_QUEUE_WINDOW_PACKETS(window, data) * BLE_OTA_QUEUE_ITEM_COST(prefix, BLE_OTA_STREAM_HEADER + (data)))

/* The longest request a client sends while a transfer runs: BEGIN with
 * PATCH (its base_sha256) and its session MAC (a device with authentication). */
#define BLE_OTA_QUEUE_REQUEST_MAX (BLE_OTA_BEGIN_PATCH_SIZE + BLE_OTA_AUTH_MAC_LEN)

/* Kept free of Stream packets: two of the longest requests. */
#define BLE_OTA_QUEUE_COMMAND_RESERVE(prefix) (2u * BLE_OTA_QUEUE_ITEM_COST(prefix, BLE_OTA_QUEUE_REQUEST_MAX))

/* The queue's size for a window (bytes, not counting what the buffer
 * keeps for itself). */
#define BLE_OTA_QUEUE_BYTES(prefix, window) \
    (BLE_OTA_QUEUE_WINDOW_BYTES(prefix, window, BLE_OTA_QUEUE_FULL_WINDOW_MIN_DATA) + \
     BLE_OTA_QUEUE_COMMAND_RESERVE(prefix))

typedef enum {
    BLE_OTA_QUEUE_STREAM = 1,  /* an OTA Stream packet */
    BLE_OTA_QUEUE_COMMAND = 2, /* an OTA Command request */
} ble_ota_queue_kind_t;

typedef struct {
    ble_ota_queue_kind_t kind;
    uint16_t link;        /* the link stamp it arrived with */
    const uint8_t *value; /* inside the item */
    size_t len;
} ble_ota_queue_item_t;

/* Whether a write of len bytes may be queued with space bytes free in a
 * buffer of length prefix `prefix`: a request whenever it fits, a Stream
 * packet only if the command reserve stays free; nothing longer than
 * BLE_OTA_MAX_PACKET. */
bool ble_ota_queue_admit(size_t prefix, size_t space, ble_ota_queue_kind_t kind, size_t len);

/* Frames a write into item (BLE_OTA_QUEUE_ITEM_MAX bytes); returns the
 * item's length, 0 when len is over BLE_OTA_MAX_PACKET or kind unknown. */
size_t ble_ota_queue_encode(uint8_t *item, ble_ota_queue_kind_t kind, uint16_t link, const uint8_t *value, size_t len);

/* Reads an item back; false for one too short or of an unknown kind. */
bool ble_ota_queue_decode(const uint8_t *item, size_t len, ble_ota_queue_item_t *out);

/* The window and largest packet the device may promise (OTA Info, BEGIN's
 * answer) with a queue sized for window_max: a window of 0 or above it
 * becomes window_max, a max_packet without room for image bytes or above
 * BLE_OTA_MAX_PACKET becomes BLE_OTA_MAX_PACKET. Returns true when it
 * changed anything. */
bool ble_ota_queue_fit_config(ble_ota_config_t *config, uint32_t window_max);

/* --- the link count --- */

/* The count after a connect (up) or a disconnect; one event that would not
 * change the parity (a lost one in between) is made to. */
unsigned ble_ota_link_count_next(unsigned count, bool up);

/* What the core must be told to catch up from the count it has seen
 * (applied) to the current one: several events in a row fold into one
 * disconnect and one connect (nothing reached the core from the links in
 * between: their writes carry stamps of those links). */
typedef struct {
    bool disconnected; /* the link the core knows of dropped */
    bool connected;    /* a link is up now */
} ble_ota_link_catch_up_t;

ble_ota_link_catch_up_t ble_ota_link_count_catch_up(unsigned applied, unsigned now);

/* The stamp a write arriving now carries, and whether an item's stamp is
 * still the link the core knows of. */
uint16_t ble_ota_link_count_stamp(unsigned count);
bool ble_ota_link_count_current(unsigned applied, uint16_t stamp);

/* --- the task's wait --- */

/* How long the task may wait for the next queued write, in ticks: until
 * the core's next tick is due (period ticks after the last, since ticks
 * ago), and at most one tick while idle work is left (a step each time the
 * queue is empty, blocking a tick in between so lower-priority tasks run). */
uint32_t ble_ota_queue_wait_ticks(uint32_t since, uint32_t period, bool idle_work);

#endif /* BLE_OTA_QUEUE_H */
