/*
 * The OTA Command notifications the fixture recorded (test_fixture.h), as
 * the core's unit tests read them: the last one, whether it answers a
 * request, and its bytes printed when a check fails.
 */
#ifndef TEST_NOTES_H
#define TEST_NOTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ble_ota_protocol.h"
#include "test_fixture.h"

/* For answered(): an answer of any length (in a session a MAC follows the status). */
#define ANY_LEN 0u

/* The last OTA Command notification; NULL when there was none. */
static inline const cmd_note_t *
last_note(void)
{
    return s_fx.cmd_count == 0 ? NULL : &s_fx.cmds[(s_fx.cmd_count - 1) % MAX_CMD_NOTES];
}

/* Prints a notification's bytes after `what`, or that there is none. */
static inline void
print_note(const char *what, const cmd_note_t *n)
{
    printf("  %s:", what);
    for (size_t i = 0; n != NULL && i < n->len; i++) {
        printf(" %02x", n->data[i]);
    }
    printf("%s\n", n == NULL ? " none" : "");
}

/* The last notification answers opcode with status in len bytes (ANY_LEN:
 * two or more); when it does not, it is printed. */
static inline bool
answered(uint8_t opcode, uint8_t status, size_t len)
{
    const cmd_note_t *n = last_note();
    if (n != NULL && (len == ANY_LEN ? n->len >= 2 : n->len == len) && n->data[0] == (opcode | BLE_OTA_ANSWER) &&
        n->data[1] == status) {
        return true;
    }
    print_note("last notification", n);
    return false;
}

#endif /* TEST_NOTES_H */
