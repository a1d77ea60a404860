/*
 * GATT server: the OTA service and Device Information.
 *
 * The OTA service keeps the seed's UUIDs and characteristic properties so
 * that seed clients (the Python/Bleak script) work unchanged, and adds the
 * protocol v2 characteristics (OTA Info, OTA Command, OTA Stream) beside
 * them (docs/PROTOCOL.md). Every callback runs on the NimBLE host task, one
 * at a time, which is why single static buffers serve all characteristics.
 *
 * The seed characteristics call the core synchronously under the core lock
 * (their ATT errors travel in the write response). The v2 ones never wait
 * for flash: writes are queued for the OTA task, Info is a snapshot
 * (ota_task.c).
 */
#include "ota_gatt.h"

#include <stddef.h>
#include <string.h>

#include "esp_app_desc.h"
#include "esp_log.h"
#include "host/ble_gatt.h"
#include "host/ble_hs.h"
#include "sdkconfig.h"
#include "services/gap/ble_svc_gap.h"
#include "services/gatt/ble_svc_gatt.h"

#include "ble_ota_core.h"
#include "ble_ota_protocol.h"
#include "ota_task.h"

static const char *TAG = "ota_gatt";

/* UUIDs are stored little-endian, i.e. the string read backwards byte by
 * byte. ota_gatt_check() compares them with ble_ota_protocol.h at boot. */

/* d6f1d96d-594c-4c53-b1c6-144a1dfde6d8 (BLE_OTA_SERVICE_UUID) */
const ble_uuid128_t ota_gatt_service_uuid =
    BLE_UUID128_INIT(0xd8, 0xe6, 0xfd, 0x1d, 0x4a, 0x14, 0xc6, 0xb1,
                     0x53, 0x4c, 0x4c, 0x59, 0x6d, 0xd9, 0xf1, 0xd6);

/* 7ad671aa-21c0-46a4-b722-270e3ae3d830 (BLE_OTA_CONTROL_UUID) */
static const ble_uuid128_t s_control_uuid =
    BLE_UUID128_INIT(0x30, 0xd8, 0xe3, 0x3a, 0x0e, 0x27, 0x22, 0xb7,
                     0xa4, 0x46, 0xc0, 0x21, 0xaa, 0x71, 0xd6, 0x7a);

/* 23408888-1f40-4cd8-9b89-ca8d45f8a5b0 (BLE_OTA_DATA_UUID) */
static const ble_uuid128_t s_data_uuid =
    BLE_UUID128_INIT(0xb0, 0xa5, 0xf8, 0x45, 0x8d, 0xca, 0x89, 0x9b,
                     0xd8, 0x4c, 0x40, 0x1f, 0x88, 0x88, 0x40, 0x23);

/* c771fa01-c1a5-46d6-8529-795dac415ff6 (BLE_OTA_INFO_UUID) */
static const ble_uuid128_t s_info_uuid =
    BLE_UUID128_INIT(0xf6, 0x5f, 0x41, 0xac, 0x5d, 0x79, 0x29, 0x85,
                     0xd6, 0x46, 0xa5, 0xc1, 0x01, 0xfa, 0x71, 0xc7);

/* c771fa02-c1a5-46d6-8529-795dac415ff6 (BLE_OTA_COMMAND_UUID) */
static const ble_uuid128_t s_command_uuid =
    BLE_UUID128_INIT(0xf6, 0x5f, 0x41, 0xac, 0x5d, 0x79, 0x29, 0x85,
                     0xd6, 0x46, 0xa5, 0xc1, 0x02, 0xfa, 0x71, 0xc7);

/* c771fa03-c1a5-46d6-8529-795dac415ff6 (BLE_OTA_STREAM_UUID) */
static const ble_uuid128_t s_stream_uuid =
    BLE_UUID128_INIT(0xf6, 0x5f, 0x41, 0xac, 0x5d, 0x79, 0x29, 0x85,
                     0xd6, 0x46, 0xa5, 0xc1, 0x03, 0xfa, 0x71, 0xc7);

/* Highest OTA Command request opcode (docs/PROTOCOL.md); the core has the
 * same limit in ble_ota_v2.c, not in a public header. */
#define OTA_GATT_OPCODE_MAX 0x3F

/* Device Information service and the characteristics we expose. */
#define DIS_SVC_UUID16          0x180A
#define DIS_MODEL_NUMBER_UUID16 0x2A24
#define DIS_FW_REVISION_UUID16  0x2A26
#define DIS_MANUFACTURER_UUID16 0x2A29

static uint16_t s_control_handle;
static uint16_t s_data_handle;
static uint16_t s_info_handle;
static uint16_t s_command_handle;
static uint16_t s_stream_handle;

/*
 * Flattened value of the last OTA write.
 *
 * Can a write longer than 512 bytes reach this code? Yes. NimBLE
 * (esp-nimble, host/src/ble_att_svr.c) caps only the reassembled value of a
 * prepared ("long") write at BLE_ATT_ATTR_MAX_LEN (512, in
 * ble_att_svr_prep_validate). For a plain Write Request or Write Command the
 * only check is in ble_l2cap.c: the L2CAP PDU must not exceed the negotiated
 * ATT MTU (else the link is dropped). With CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU
 * = 517 and a client that asks for 517, a 514-byte value reaches the access
 * callback; that is what a seed client sends as its "mtu - 3" packets, so
 * the buffer holds BLE_OTA_MAX_PACKET (514). BLE_ATT_MTU_MAX is 527, so a
 * larger preferred MTU would allow up to 524 bytes: the length check below
 * is what keeps those out. OTA Stream values have the same limit
 * (config.max_packet is BLE_OTA_MAX_PACKET).
 */
static uint8_t s_rx_buf[BLE_OTA_MAX_PACKET];

/* The OTA Info value being read. */
static uint8_t s_info_buf[BLE_OTA_INFO_SIZE];

static int ota_gatt_control_access(uint16_t conn_handle, uint16_t attr_handle,
                                   struct ble_gatt_access_ctxt *ctxt, void *arg);
static int ota_gatt_data_access(uint16_t conn_handle, uint16_t attr_handle,
                                struct ble_gatt_access_ctxt *ctxt, void *arg);
static int ota_gatt_info_access(uint16_t conn_handle, uint16_t attr_handle,
                                struct ble_gatt_access_ctxt *ctxt, void *arg);
static int ota_gatt_command_access(uint16_t conn_handle, uint16_t attr_handle,
                                   struct ble_gatt_access_ctxt *ctxt, void *arg);
static int ota_gatt_stream_access(uint16_t conn_handle, uint16_t attr_handle,
                                  struct ble_gatt_access_ctxt *ctxt, void *arg);
static int ota_gatt_dis_access(uint16_t conn_handle, uint16_t attr_handle,
                               struct ble_gatt_access_ctxt *ctxt, void *arg);

static const struct ble_gatt_svc_def s_services[] = {
    {
        .type = BLE_GATT_SVC_TYPE_PRIMARY,
        .uuid = &ota_gatt_service_uuid.u,
        .characteristics = (const struct ble_gatt_chr_def[]) {
            {
                .uuid = &s_control_uuid.u,
                .access_cb = ota_gatt_control_access,
                .flags = BLE_GATT_CHR_F_READ | BLE_GATT_CHR_F_WRITE |
                         BLE_GATT_CHR_F_NOTIFY,
                .val_handle = &s_control_handle,
            },
            {
                /* Write with response only, as in the seed: every packet is
                 * acknowledged after it is in flash, and the response carries
                 * the core's ATT error when it is not. NimBLE does not enforce
                 * the property: a Write Command reaches the callback too, its
                 * error is just never sent (the core's DONE_NAK still is). */
                .uuid = &s_data_uuid.u,
                .access_cb = ota_gatt_data_access,
                .flags = BLE_GATT_CHR_F_WRITE,
                .val_handle = &s_data_handle,
            },
            {
                .uuid = &s_info_uuid.u,
                .access_cb = ota_gatt_info_access,
                .flags = BLE_GATT_CHR_F_READ,
                .val_handle = &s_info_handle,
            },
            {
                /* Requests with response; answers and events as
                 * notifications, sent by the OTA task. */
                .uuid = &s_command_uuid.u,
                .access_cb = ota_gatt_command_access,
                .flags = BLE_GATT_CHR_F_WRITE | BLE_GATT_CHR_F_NOTIFY,
                .val_handle = &s_command_handle,
            },
            {
                /* Write Commands carry the stream; a Write Request is taken
                 * the same way (its response says nothing about flash). */
                .uuid = &s_stream_uuid.u,
                .access_cb = ota_gatt_stream_access,
                .flags = BLE_GATT_CHR_F_WRITE_NO_RSP | BLE_GATT_CHR_F_WRITE,
                .val_handle = &s_stream_handle,
            },
            { 0 },
        },
    },
    {
        .type = BLE_GATT_SVC_TYPE_PRIMARY,
        .uuid = BLE_UUID16_DECLARE(DIS_SVC_UUID16),
        .characteristics = (const struct ble_gatt_chr_def[]) {
            {
                .uuid = BLE_UUID16_DECLARE(DIS_MANUFACTURER_UUID16),
                .access_cb = ota_gatt_dis_access,
                .flags = BLE_GATT_CHR_F_READ,
            },
            {
                .uuid = BLE_UUID16_DECLARE(DIS_MODEL_NUMBER_UUID16),
                .access_cb = ota_gatt_dis_access,
                .flags = BLE_GATT_CHR_F_READ,
            },
            {
                .uuid = BLE_UUID16_DECLARE(DIS_FW_REVISION_UUID16),
                .access_cb = ota_gatt_dis_access,
                .flags = BLE_GATT_CHR_F_READ,
            },
            { 0 },
        },
    },
    { 0 },
};

/**
 * Copies the value of a write into s_rx_buf.
 *
 * @param om       the written value (may be a chain of mbufs)
 * @param out_len  receives the value length
 * @return 0, or the ATT error to return to the client
 */
static int
ota_gatt_flatten(const struct os_mbuf *om, size_t *out_len)
{
    uint16_t len = OS_MBUF_PKTLEN(om);
    uint16_t copied = 0;
    int rc;

    if (len > sizeof(s_rx_buf)) {
        ESP_LOGW(TAG, "write of %u bytes rejected (max %u)",
                 (unsigned)len, (unsigned)sizeof(s_rx_buf));
        return BLE_ATT_ERR_INVALID_ATTR_VALUE_LEN;
    }
    rc = ble_hs_mbuf_to_flat(om, s_rx_buf, sizeof(s_rx_buf), &copied);
    if (rc != 0) {
        ESP_LOGE(TAG, "ble_hs_mbuf_to_flat failed: %d", rc);
        return BLE_ATT_ERR_UNLIKELY;
    }
    *out_len = copied;
    return 0;
}

/**
 * Appends a value to a read response.
 *
 * @return 0, or BLE_ATT_ERR_INSUFFICIENT_RES when no mbuf was free
 */
static int
ota_gatt_append(struct os_mbuf *om, const void *data, size_t len)
{
    if (len > UINT16_MAX || os_mbuf_append(om, data, (uint16_t)len) != 0) {
        return BLE_ATT_ERR_INSUFFICIENT_RES;
    }
    return 0;
}

/**
 * OTA Control: reads return the last control value, writes go to the core.
 *
 * @return 0 or an ATT error code
 */
static int
ota_gatt_control_access(uint16_t conn_handle, uint16_t attr_handle,
                        struct ble_gatt_access_ctxt *ctxt, void *arg)
{
    (void)conn_handle;
    (void)attr_handle;
    (void)arg;

    switch (ctxt->op) {
    case BLE_GATT_ACCESS_OP_READ_CHR: {
        const uint8_t value = ble_ota_core_control_read(ota_task_core_lock());
        ota_task_core_unlock();
        return ota_gatt_append(ctxt->om, &value, sizeof(value));
    }
    case BLE_GATT_ACCESS_OP_WRITE_CHR: {
        size_t len = 0;
        const int att_err = ota_gatt_flatten(ctxt->om, &len);
        if (att_err != 0) {
            return att_err;
        }
        /* Synchronous, as the seed protocol needs: REQUEST opens the slot
         * and DONE validates the image here, on the host task. */
        const ble_ota_status_t status = ble_ota_core_control_write(ota_task_core_lock(), s_rx_buf, len);
        ota_task_core_unlock();
        return ble_ota_status_to_att(status);
    }
    default:
        return BLE_ATT_ERR_UNLIKELY;
    }
}

/**
 * OTA Data: the packet size before REQUEST, firmware packets after it.
 *
 * @return 0 or an ATT error code
 */
static int
ota_gatt_data_access(uint16_t conn_handle, uint16_t attr_handle,
                     struct ble_gatt_access_ctxt *ctxt, void *arg)
{
    (void)conn_handle;
    (void)attr_handle;
    (void)arg;

    if (ctxt->op != BLE_GATT_ACCESS_OP_WRITE_CHR) {
        return BLE_ATT_ERR_UNLIKELY;
    }
    size_t len = 0;
    const int att_err = ota_gatt_flatten(ctxt->om, &len);
    if (att_err != 0) {
        return att_err;
    }
    /* Synchronous: the write response reports whether the packet is in
     * flash. */
    const ble_ota_status_t status = ble_ota_core_data_write(ota_task_core_lock(), s_rx_buf, len);
    ota_task_core_unlock();
    return ble_ota_status_to_att(status);
}

/**
 * OTA Info: the core's value, from the snapshot the OTA task keeps (so a
 * read never waits for flash). The whole value is appended every time:
 * for a Read Blob, NimBLE calls this with the offset and copies only the
 * part from that offset on (esp-nimble host/src/ble_gatts.c,
 * ble_gatts_val_access: os_mbuf_appendfrom(..., offset, ...), and
 * BLE_ATT_ERR_INVALID_OFFSET past the end); the ATT layer cuts the response
 * to the MTU. Read Blob is on in ESP-IDF (MYNEWT_VAL_BLE_ATT_SVR_READ_BLOB).
 * Each piece comes from the snapshot of the moment, so a value read in
 * pieces during a transfer may mix two snapshots; only the transfer fields
 * and last_status can differ, and a client learns the resume offset from
 * BEGIN's answer, not from here.
 *
 * @return 0 or an ATT error code
 */
static int
ota_gatt_info_access(uint16_t conn_handle, uint16_t attr_handle,
                     struct ble_gatt_access_ctxt *ctxt, void *arg)
{
    (void)conn_handle;
    (void)attr_handle;
    (void)arg;

    if (ctxt->op != BLE_GATT_ACCESS_OP_READ_CHR) {
        return BLE_ATT_ERR_UNLIKELY;
    }
    const size_t len = ota_task_info(s_info_buf, sizeof(s_info_buf));
    if (len == 0) {
        ESP_LOGE(TAG, "no OTA Info value");
        return BLE_ATT_ERR_UNLIKELY;
    }
    return ota_gatt_append(ctxt->om, s_info_buf, len);
}

/**
 * OTA Command: queued behind the Stream packets received before it, so END
 * is processed after the last packet. The write response only says the
 * request was received; the answer is a notification.
 *
 * @return 0 or an ATT error code
 */
static int
ota_gatt_command_access(uint16_t conn_handle, uint16_t attr_handle,
                        struct ble_gatt_access_ctxt *ctxt, void *arg)
{
    (void)conn_handle;
    (void)attr_handle;
    (void)arg;

    if (ctxt->op != BLE_GATT_ACCESS_OP_WRITE_CHR) {
        return BLE_ATT_ERR_UNLIKELY;
    }
    size_t len = 0;
    const int att_err = ota_gatt_flatten(ctxt->om, &len);
    if (att_err != 0) {
        return att_err;
    }
    /* The two cases where the core fails the write instead of answering
     * (ble_ota_core_command_write), decided here because the core only sees
     * the request once the write response has gone: an empty value (0x0D),
     * and a first byte outside the request range 0x00-0x3F, whose answer
     * would read as an event (0x82; docs/PROTOCOL.md, OTA Command). The
     * core still gets them: on a device with authentication, a stranger's
     * junk counts against its link. */
    int refusal = 0;
    if (len == 0) {
        refusal = ble_ota_status_to_att(BLE_OTA_ERR_LENGTH);
    } else if (s_rx_buf[0] > OTA_GATT_OPCODE_MAX) {
        ESP_LOGW(TAG, "OTA Command 0x%02x is no request", s_rx_buf[0]);
        refusal = ble_ota_status_to_att(BLE_OTA_ERR_VALUE);
    }
    if (refusal != 0) {
        (void)ota_task_post(OTA_TASK_COMMAND, s_rx_buf, len);
        return refusal;
    }
    if (!ota_task_post(OTA_TASK_COMMAND, s_rx_buf, len)) {
        ESP_LOGW(TAG, "OTA Command 0x%02x refused: queue full", s_rx_buf[0]);
        return BLE_ATT_ERR_INSUFFICIENT_RES;
    }
    return 0;
}

/**
 * OTA Stream: queued for the OTA task; never fails the write (a packet the
 * queue cannot take is dropped, and the core's RESYNC has it sent again).
 *
 * @return 0 or an ATT error code
 */
static int
ota_gatt_stream_access(uint16_t conn_handle, uint16_t attr_handle,
                       struct ble_gatt_access_ctxt *ctxt, void *arg)
{
    (void)conn_handle;
    (void)attr_handle;
    (void)arg;

    if (ctxt->op != BLE_GATT_ACCESS_OP_WRITE_CHR) {
        return BLE_ATT_ERR_UNLIKELY;
    }
    size_t len = 0;
    const int att_err = ota_gatt_flatten(ctxt->om, &len);
    if (att_err != 0) {
        return att_err;
    }
    (void)ota_task_post(OTA_TASK_STREAM, s_rx_buf, len); /* logs drops itself */
    return 0;
}

/**
 * Device Information: manufacturer, model (the IDF target, so a client can
 * tell which chip an image must be built for) and firmware revision (the
 * application version, PROJECT_VER or `git describe`).
 *
 * @return 0 or an ATT error code
 */
static int
ota_gatt_dis_access(uint16_t conn_handle, uint16_t attr_handle,
                    struct ble_gatt_access_ctxt *ctxt, void *arg)
{
    (void)conn_handle;
    (void)attr_handle;
    (void)arg;

    if (ctxt->op != BLE_GATT_ACCESS_OP_READ_CHR) {
        return BLE_ATT_ERR_UNLIKELY;
    }

    const char *value;
    size_t len;
    switch (ble_uuid_u16(ctxt->chr->uuid)) {
    case DIS_MANUFACTURER_UUID16:
        value = CONFIG_BLE_OTA_MANUFACTURER_NAME;
        len = strlen(value);
        break;
    case DIS_MODEL_NUMBER_UUID16:
        value = CONFIG_IDF_TARGET;
        len = strlen(value);
        break;
    case DIS_FW_REVISION_UUID16: {
        /* version is a char[32] that a 32-character version fills without
         * a terminator. */
        const esp_app_desc_t *desc = esp_app_get_description();
        const char *end = memchr(desc->version, '\0', sizeof(desc->version));
        value = desc->version;
        len = end != NULL ? (size_t)(end - value) : sizeof(desc->version);
        break;
    }
    default:
        return BLE_ATT_ERR_UNLIKELY;
    }
    return ota_gatt_append(ctxt->om, value, len);
}

int
ota_gatt_init(void)
{
    int rc;

    ble_svc_gap_init();
    ble_svc_gatt_init();

    rc = ble_gatts_count_cfg(s_services);
    if (rc != 0) {
        ESP_LOGE(TAG, "ble_gatts_count_cfg failed: %d", rc);
        return rc;
    }
    rc = ble_gatts_add_svcs(s_services);
    if (rc != 0) {
        ESP_LOGE(TAG, "ble_gatts_add_svcs failed: %d", rc);
        return rc;
    }
    return 0;
}

void
ota_gatt_on_disconnect(void)
{
    ota_task_link_event(false);
}

void
ota_gatt_on_connect(void)
{
    ota_task_link_event(true);
}

uint16_t
ota_gatt_control_handle(void)
{
    return s_control_handle;
}

uint16_t
ota_gatt_command_handle(void)
{
    return s_command_handle;
}

/** True when uuid prints as expected (ble_uuid_to_str writes lower case). */
static bool
ota_gatt_uuid_is(const ble_uuid128_t *uuid, const char *expected)
{
    char text[BLE_UUID_STR_LEN];

    ble_uuid_to_str(&uuid->u, text);
    if (strcmp(text, expected) != 0) {
        ESP_LOGE(TAG, "UUID %s differs from protocol value %s", text, expected);
        return false;
    }
    return true;
}

bool
ota_gatt_check(void)
{
    bool ok = true;

    ok &= ota_gatt_uuid_is(&ota_gatt_service_uuid, BLE_OTA_SERVICE_UUID);
    ok &= ota_gatt_uuid_is(&s_control_uuid, BLE_OTA_CONTROL_UUID);
    ok &= ota_gatt_uuid_is(&s_data_uuid, BLE_OTA_DATA_UUID);
    ok &= ota_gatt_uuid_is(&s_info_uuid, BLE_OTA_INFO_UUID);
    ok &= ota_gatt_uuid_is(&s_command_uuid, BLE_OTA_COMMAND_UUID);
    ok &= ota_gatt_uuid_is(&s_stream_uuid, BLE_OTA_STREAM_UUID);
    if (s_control_handle == 0 || s_data_handle == 0 || s_info_handle == 0 ||
        s_command_handle == 0 || s_stream_handle == 0) {
        ESP_LOGE(TAG, "OTA characteristics have no handles: service not started");
        ok = false;
    } else {
        ESP_LOGI(TAG, "OTA handles: Control %u, Data %u, Info %u, Command %u, Stream %u",
                 (unsigned)s_control_handle, (unsigned)s_data_handle,
                 (unsigned)s_info_handle, (unsigned)s_command_handle,
                 (unsigned)s_stream_handle);
    }
    /* A missing or short value would mislead every v2 client. (Own buffer:
     * this runs on app_main's task, s_info_buf belongs to the host task.) */
    uint8_t info[BLE_OTA_INFO_SIZE];
    if (ota_task_info(info, sizeof(info)) != BLE_OTA_INFO_SIZE) {
        ESP_LOGE(TAG, "OTA Info value missing or not %u bytes", (unsigned)BLE_OTA_INFO_SIZE);
        ok = false;
    }
    return ok;
}
