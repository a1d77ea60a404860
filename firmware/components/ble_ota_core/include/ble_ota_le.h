/*
 * Little-endian fields, as every multi-byte integer of the protocol, the
 * image format and the key record is stored. Static inline: the core, the
 * host platform and the tests share one definition without a link
 * dependency.
 */
#ifndef BLE_OTA_LE_H
#define BLE_OTA_LE_H

#include <stdint.h>

static inline uint16_t
ble_ota_get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t
ble_ota_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static inline void
ble_ota_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline void
ble_ota_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

#endif /* BLE_OTA_LE_H */
