/*
 * GATT server: the OTA service and Device Information.
 *
 * The services, characteristics, UUIDs and properties are the portable
 * table of ble_ota_gatt.h, which the virtual ESP32 serves too: the OTA
 * service keeps the seed's UUIDs and characteristic properties so that seed
 * clients (the Python/Bleak script) work unchanged, and adds the protocol
 * v2 characteristics beside them (docs/PROTOCOL.md). ota_gatt_init() builds
 * NimBLE's service definitions from it; this file adds the access
 * callbacks. Every callback runs on the NimBLE host task, one at a time,
 * which is why single static buffers serve all characteristics.
 *
 * The seed characteristics call the core synchronously under the core lock
 * (their ATT errors travel in the write response). The v2 ones never wait
 * for flash: writes are queued for the OTA task, Info is a snapshot
 * (ota_task.c).
 */
#include "ota_gatt.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "esp_app_desc.h"
#include "esp_log.h"
#include "host/ble_gatt.h"
#include "host/ble_hs.h"
#include "sdkconfig.h"
#include "services/gap/ble_svc_gap.h"
#include "services/gatt/ble_svc_gatt.h"

#include "ble_ota_bt.h"
#include "ble_ota_core.h"
#include "ble_ota_gatt.h"
#include "ble_ota_protocol.h"
#include "ota_task.h"

static const char *TAG = "ota_gatt";

/* The table's UUIDs, services and characteristics as NimBLE takes them,
 * built by ota_gatt_init(). NimBLE keeps pointers into these for as long as
 * the host runs. */
ble_uuid128_t ota_gatt_service_uuid;
static ble_uuid_any_t s_svc_uuid[BLE_OTA_SVC_COUNT];
static ble_uuid_any_t s_chr_uuid[BLE_OTA_CHR_COUNT];
static uint16_t s_handles[BLE_OTA_CHR_COUNT];
/* Each service's characteristics, each list ended by an empty entry. */
static struct ble_gatt_chr_def s_chr_defs[BLE_OTA_CHR_COUNT + BLE_OTA_SVC_COUNT];
static struct ble_gatt_svc_def s_services[BLE_OTA_SVC_COUNT + 1];

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

/* Declared with NimBLE's callback type, so each must have its signature. */
static ble_gatt_access_fn ota_gatt_control_access;
static ble_gatt_access_fn ota_gatt_data_access;
static ble_gatt_access_fn ota_gatt_info_access;
static ble_gatt_access_fn ota_gatt_command_access;
static ble_gatt_access_fn ota_gatt_stream_access;
static ble_gatt_access_fn ota_gatt_dis_access;

/* Each characteristic's access callback; its argument is its ble_ota_chr_t. */
static ble_gatt_access_fn *const k_access[BLE_OTA_CHR_COUNT] = {
    [BLE_OTA_CHR_CONTROL] = ota_gatt_control_access,  [BLE_OTA_CHR_DATA] = ota_gatt_data_access,
    [BLE_OTA_CHR_INFO] = ota_gatt_info_access,        [BLE_OTA_CHR_COMMAND] = ota_gatt_command_access,
    [BLE_OTA_CHR_STREAM] = ota_gatt_stream_access,    [BLE_OTA_CHR_MANUFACTURER_NAME] = ota_gatt_dis_access,
    [BLE_OTA_CHR_MODEL_NUMBER] = ota_gatt_dis_access, [BLE_OTA_CHR_FIRMWARE_REVISION] = ota_gatt_dis_access,
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

    /* The length rule is portable (ble_ota_bt.h), the virtual ESP32's too. */
    const uint8_t refused = ble_ota_bt_write_check(len);
    if (refused != 0) {
        ESP_LOGW(TAG, "write of %u bytes rejected (max %u)", (unsigned)len, (unsigned)sizeof(s_rx_buf));
        return refused;
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
ota_gatt_control_access(uint16_t conn_handle, uint16_t attr_handle, struct ble_gatt_access_ctxt *ctxt, void *arg)
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
 * Write with response only, as in the seed; NimBLE does not enforce that
 * property (either write property permits both kinds of write), so a Write
 * Command reaches this callback too: its error is never sent, the core's
 * DONE_NAK still is.
 *
 * @return 0 or an ATT error code
 */
static int
ota_gatt_data_access(uint16_t conn_handle, uint16_t attr_handle, struct ble_gatt_access_ctxt *ctxt, void *arg)
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
ota_gatt_info_access(uint16_t conn_handle, uint16_t attr_handle, struct ble_gatt_access_ctxt *ctxt, void *arg)
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
ota_gatt_command_access(uint16_t conn_handle, uint16_t attr_handle, struct ble_gatt_access_ctxt *ctxt, void *arg)
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
    /* The cases where the core fails the write instead of answering, by
     * the rule the core itself applies (ble_ota_bt_command_check): an empty
     * value (0x0D), and a first byte outside the request range, whose
     * answer would read as an event (0x82; docs/PROTOCOL.md, OTA Command).
     * Applied here because the core only sees the request once the write
     * response has gone. The core still gets them: on a device with
     * authentication, a stranger's junk counts against its link. */
    const int refusal = ble_ota_status_to_att(ble_ota_bt_command_check(s_rx_buf, len));
    if (refusal != 0) {
        ESP_LOGW(TAG, "OTA Command of %u bytes is no request", (unsigned)len);
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
 * A Write Request is taken like a Write Command: its response says nothing
 * about flash.
 *
 * @return 0 or an ATT error code
 */
static int
ota_gatt_stream_access(uint16_t conn_handle, uint16_t attr_handle, struct ble_gatt_access_ctxt *ctxt, void *arg)
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
ota_gatt_dis_access(uint16_t conn_handle, uint16_t attr_handle, struct ble_gatt_access_ctxt *ctxt, void *arg)
{
    (void)conn_handle;
    (void)attr_handle;

    if (ctxt->op != BLE_GATT_ACCESS_OP_READ_CHR) {
        return BLE_ATT_ERR_UNLIKELY;
    }

    const char *value;
    size_t len;
    switch ((ble_ota_chr_t)(uintptr_t)arg) {
    case BLE_OTA_CHR_MANUFACTURER_NAME:
        value = CONFIG_BLE_OTA_MANUFACTURER_NAME;
        len = strlen(value);
        break;
    case BLE_OTA_CHR_MODEL_NUMBER:
        value = CONFIG_IDF_TARGET;
        len = strlen(value);
        break;
    case BLE_OTA_CHR_FIRMWARE_REVISION: {
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

/** NimBLE's characteristic flags for the table's properties. */
static ble_gatt_chr_flags
ota_gatt_flags(uint8_t props)
{
    ble_gatt_chr_flags flags = 0;

    if (props & BLE_OTA_PROP_READ) {
        flags |= BLE_GATT_CHR_F_READ;
    }
    if (props & BLE_OTA_PROP_WRITE_NO_RSP) {
        flags |= BLE_GATT_CHR_F_WRITE_NO_RSP;
    }
    if (props & BLE_OTA_PROP_WRITE) {
        flags |= BLE_GATT_CHR_F_WRITE;
    }
    if (props & BLE_OTA_PROP_NOTIFY) {
        flags |= BLE_GATT_CHR_F_NOTIFY;
    }
    return flags;
}

/**
 * A UUID of the table as NimBLE takes it.
 *
 * @return 0, or BLE_HS_EINVAL for text that is no UUID
 */
static int
ota_gatt_uuid(const char *text, ble_uuid_any_t *out)
{
    uint8_t raw[BLE_OTA_UUID_MAX_LEN];
    const size_t len = ble_ota_uuid_parse(text, raw);

    if (len == 0 || ble_uuid_init_from_buf(out, raw, len) != 0) {
        ESP_LOGE(TAG, "'%s' is no UUID", text);
        return BLE_HS_EINVAL;
    }
    return 0;
}

/**
 * NimBLE's service definitions, from the table of ble_ota_gatt.h.
 *
 * @return 0, or BLE_HS_EINVAL when the table holds a malformed UUID
 */
static int
ota_gatt_build(void)
{
    size_t n = 0;

    for (int s = 0; s < BLE_OTA_SVC_COUNT; s++) {
        int rc = ota_gatt_uuid(ble_ota_gatt_svc_uuid[s], &s_svc_uuid[s]);
        if (rc != 0) {
            return rc;
        }
        s_services[s] = (struct ble_gatt_svc_def){
            .type = BLE_GATT_SVC_TYPE_PRIMARY,
            .uuid = &s_svc_uuid[s].u,
            .characteristics = &s_chr_defs[n],
        };
        for (int c = 0; c < BLE_OTA_CHR_COUNT; c++) {
            const ble_ota_chr_def_t *def = &ble_ota_gatt_chrs[c];
            if ((int)def->svc != s) {
                continue;
            }
            rc = ota_gatt_uuid(def->uuid, &s_chr_uuid[c]);
            if (rc != 0) {
                return rc;
            }
            s_chr_defs[n++] = (struct ble_gatt_chr_def){
                .uuid = &s_chr_uuid[c].u,
                .access_cb = k_access[c],
                .arg = (void *)(uintptr_t)c,
                .flags = ota_gatt_flags(def->props),
                .val_handle = &s_handles[c],
            };
        }
        s_chr_defs[n++] = (struct ble_gatt_chr_def){ 0 };
    }
    s_services[BLE_OTA_SVC_COUNT] = (struct ble_gatt_svc_def){ 0 };

    /* The scan response advertises the OTA service. */
    if (s_svc_uuid[BLE_OTA_SVC_OTA].u.type != BLE_UUID_TYPE_128) {
        ESP_LOGE(TAG, "the OTA service UUID is not 128 bits");
        return BLE_HS_EINVAL;
    }
    ota_gatt_service_uuid = s_svc_uuid[BLE_OTA_SVC_OTA].u128;
    return 0;
}

int
ota_gatt_init(void)
{
    int rc;

    ble_svc_gap_init();
    ble_svc_gatt_init();

    rc = ota_gatt_build();
    if (rc != 0) {
        return rc;
    }

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
    return s_handles[BLE_OTA_CHR_CONTROL];
}

uint16_t
ota_gatt_command_handle(void)
{
    return s_handles[BLE_OTA_CHR_COMMAND];
}

/**
 * True when NimBLE prints a 128-bit UUID as the table writes it
 * (ble_uuid_to_str writes lower case): the table's text went the right way
 * round into bytes.
 */
static bool
ota_gatt_uuid_is(const ble_uuid_any_t *uuid, const char *expected)
{
    char text[BLE_UUID_STR_LEN];

    if (uuid->u.type != BLE_UUID_TYPE_128) {
        return true; /* 16-bit ones print as 0x180a: nothing to reverse */
    }
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

    for (int s = 0; s < BLE_OTA_SVC_COUNT; s++) {
        ok &= ota_gatt_uuid_is(&s_svc_uuid[s], ble_ota_gatt_svc_uuid[s]);
    }
    for (int c = 0; c < BLE_OTA_CHR_COUNT; c++) {
        ok &= ota_gatt_uuid_is(&s_chr_uuid[c], ble_ota_gatt_chrs[c].uuid);
        if (s_handles[c] == 0) {
            ESP_LOGE(TAG, "characteristic %s has no handle: service not started", ble_ota_gatt_chrs[c].uuid);
            ok = false;
        }
    }
    if (ok) {
        ESP_LOGI(TAG, "OTA handles: Control %u, Data %u, Info %u, Command %u, Stream %u",
                 (unsigned)s_handles[BLE_OTA_CHR_CONTROL], (unsigned)s_handles[BLE_OTA_CHR_DATA],
                 (unsigned)s_handles[BLE_OTA_CHR_INFO], (unsigned)s_handles[BLE_OTA_CHR_COMMAND],
                 (unsigned)s_handles[BLE_OTA_CHR_STREAM]);
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
