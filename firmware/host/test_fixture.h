/*
 * The fixture the core's unit tests share: one emulated device with its
 * core, what it notified and logged, a clock the tests move by hand, and the
 * seed client's steps.
 */
#ifndef TEST_FIXTURE_H
#define TEST_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ble_ota_core.h"
#include "host_port.h"

#define SLOT_SIZE     (256u * 1024u)
#define MAX_NOTIFY    64
#define LOG_RING      16
#define MAX_CMD_NOTES 512

/* One OTA Command notification. */
typedef struct {
    uint8_t data[96]; /* the largest answer with its MAC fits */
    size_t len;
} cmd_note_t;

typedef struct {
    host_dev_t dev;
    ble_ota_core_t core;
    uint8_t notified[MAX_NOTIFY];
    int notify_count;
    cmd_note_t cmds[MAX_CMD_NOTES]; /* OTA Command notifications, oldest first */
    int cmd_count;
    uint32_t clock_ms; /* the device's clock: moved by the tests only */
    int warnings;
    int errors;
    int drops; /* links the firmware ended (port disconnect) */
    char logs[LOG_RING][160];
    int log_count;
} fixture_t;

extern fixture_t s_fx;
/* Config of the core at every (re)boot; fx_setup() resets it to the defaults. */
extern ble_ota_config_t s_config;
/* The image the tests upload (2.0.0 unless a test builds another). */
extern uint8_t s_image[64 * 1024];
extern size_t s_image_len;

/* Prints the last device log lines (test_on_failure). */
void fx_print_logs(void);
/* The version of the app the fixture's device runs (valid until the next call). */
const char *running_version(void);
/* A synthetic app of project virtual-esp32 for the ESP32: random payload bytes, or, compressible,
 * bytes that deflate about 2:1 as ESP-IDF apps do. */
size_t build_image(uint8_t *out, size_t cap, const char *version, uint32_t payload, uint32_t seed);
size_t build_image_of(uint8_t *out, size_t cap, const char *version, uint32_t payload, uint32_t seed,
                      bool compressible);
/* A fresh device running a valid 1.0.0 in ota_0, and its core. */
void fx_setup(void);
/* Restart as the virtual device does: boot, fresh core, confirm; then a
 * client connects (ble_ota_core_connected). */
int fx_reboot(bool self_test);
/* The link drops and a client connects again. */
void fx_reconnect(void);

/* Seed protocol steps. */
uint8_t last_notify(void);
ble_ota_status_t ctrl(uint8_t value);
ble_ota_status_t packet_size(uint16_t size);
ble_ota_status_t send_packets(const uint8_t *data, size_t len, size_t packet);
/* The seed client's whole sequence; checks every answer. */
void upload(const uint8_t *data, size_t len, uint16_t packet);

#endif /* TEST_FIXTURE_H */
