/*
 * GAP: advertising, connection state and the OTA notifications.
 *
 * Advertising data keeps the seed's layout (flags, TX power, complete name)
 * so seed clients that scan by name still match. The OTA service UUID does
 * not fit beside a long name in 31 bytes, so it goes into the scan response,
 * where active scanners (BlueZ, CoreBluetooth, Android) can filter on it.
 * How much of the name fits, and how a notification that finds no buffer
 * is tried again, are decided in ble_ota_bt.c (as in the virtual ESP32).
 */
#include "ota_gap.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "esp_log.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "host/ble_att.h"
#include "host/ble_gap.h"
#include "host/ble_hs.h"
#include "host/util/util.h"
#include "nimble/ble.h"
#include "sdkconfig.h"
#include "services/gap/ble_svc_gap.h"
#include "soc/soc_caps.h"

#include "ble_ota_bt.h"
#include "ota_gatt.h"
#include "ota_task.h"

#if CONFIG_BT_NIMBLE_EXT_ADV
#error "ota_gap.c uses the legacy advertising API: disable CONFIG_BT_NIMBLE_EXT_ADV"
#endif

static const char *TAG = "ota_gap";

/* The name's room (ble_ota_bt.h) is what NimBLE's advertising data leaves:
 * 31 bytes minus flags (3), TX power (3) and the name's own header (2). */
_Static_assert(BLE_OTA_ADV_NAME_MAX == BLE_HS_ADV_MAX_SZ - 3 - 3 - 2, "advertised name's room");

static uint8_t s_own_addr_type;
/* Written by the host task (GAP events), read by the OTA task when it
 * notifies: atomics, so the OTA task never sees a torn or stale value. */
static atomic_uint s_conn_handle = BLE_HS_CONN_HANDLE_NONE;
static atomic_bool s_control_subscribed;
static atomic_bool s_command_subscribed;
static ota_gap_advertising_fn *s_on_advertising;

/* The link as NimBLE's events report it: written by the host task,
 * copied whole by the OTA task for OTA Info (ota_gap_link_info). */
static portMUX_TYPE s_link_lock = portMUX_INITIALIZER_UNLOCKED;
static ble_ota_link_info_t s_link;

/* The 2M PHY is asked for only where the controller has it: the BLE 5
 * chips (ESP32-C2, C3, C6, H2, S3: SOC_BLE_50_SUPPORTED), with NimBLE's
 * 2M option on (its default there). The original ESP32 is BLE 4.2. */
#if defined(SOC_BLE_50_SUPPORTED) && SOC_BLE_50_SUPPORTED && defined(CONFIG_BT_NIMBLE_LL_CFG_FEAT_LE_2M_PHY)
#define OTA_GAP_HAS_2M_PHY 1
#else
#define OTA_GAP_HAS_2M_PHY 0
#endif

static int ota_gap_event(struct ble_gap_event *event, void *arg);

/** Takes the connection's interval, latency and supervision timeout from
 * NimBLE's descriptor (host task: after connect and each update). */
static void
ota_gap_link_from_conn(uint16_t conn_handle)
{
    struct ble_gap_conn_desc desc;
    const int rc = ble_gap_conn_find(conn_handle, &desc);

    if (rc != 0) {
        ESP_LOGW(TAG, "ble_gap_conn_find(%u) failed: %d", (unsigned)conn_handle, rc);
        return;
    }
    taskENTER_CRITICAL(&s_link_lock);
    s_link.conn_itvl = desc.conn_itvl;
    s_link.conn_latency = desc.conn_latency;
    s_link.supervision_timeout = desc.supervision_timeout;
    taskEXIT_CRITICAL(&s_link_lock);
    ESP_LOGI(TAG, "link: interval %u.%02u ms, latency %u, supervision timeout %u ms",
             (unsigned)(desc.conn_itvl * 125u / 100u), (unsigned)(desc.conn_itvl * 125u % 100u),
             (unsigned)desc.conn_latency, (unsigned)desc.supervision_timeout * 10u);
}

void
ota_gap_link_info(ble_ota_link_info_t *out)
{
    taskENTER_CRITICAL(&s_link_lock);
    *out = s_link;
    taskEXIT_CRITICAL(&s_link_lock);
}

bool
ota_gap_request_data_path(uint16_t tx_octets, uint16_t tx_time_us, bool prefer_2m)
{
    const unsigned conn = atomic_load(&s_conn_handle);
    int rc;

    if (conn == BLE_HS_CONN_HANDLE_NONE) {
        return true;
    }
    /* Starts the LL Data Length Update procedure; the central's controller
     * answers on its own, so this works whatever its host asks for. The
     * outcome comes as BLE_GAP_EVENT_DATA_LEN_CHG. */
    rc = ble_gap_set_data_len((uint16_t)conn, tx_octets, tx_time_us);
    if (rc != 0) {
        ESP_LOGW(TAG, "ble_gap_set_data_len(%u, %u, %u) failed: %d", conn, (unsigned)tx_octets, (unsigned)tx_time_us,
                 rc);
    }
#if OTA_GAP_HAS_2M_PHY
    if (prefer_2m) {
        /* Only 2M preferred: a central without it keeps the link on 1M.
         * The outcome comes as BLE_GAP_EVENT_PHY_UPDATE_COMPLETE. */
        rc = ble_gap_set_prefered_le_phy((uint16_t)conn, BLE_GAP_LE_PHY_2M_MASK, BLE_GAP_LE_PHY_2M_MASK,
                                         BLE_GAP_LE_PHY_CODED_ANY);
        if (rc != 0) {
            ESP_LOGW(TAG, "ble_gap_set_prefered_le_phy(%u, 2M) failed: %d", conn, rc);
        }
    }
#else
    if (prefer_2m) {
        ESP_LOGD(TAG, "no LE 2M PHY on this chip: the link stays on 1M");
    }
#endif
    return true;
}

bool
ota_gap_request_conn_params(const ble_ota_conn_params_t *params, const char *what)
{
    const unsigned conn = atomic_load(&s_conn_handle);

    if (conn == BLE_HS_CONN_HANDLE_NONE || params == NULL) {
        return true;
    }
    const struct ble_gap_upd_params upd = {
        .itvl_min = params->itvl_min,
        .itvl_max = params->itvl_max,
        .latency = params->latency,
        .supervision_timeout = params->supervision_timeout,
        /* A hint to the controller (ble_ota_link.h). */
        .min_ce_len = 0,
        .max_ce_len = ble_ota_link_max_ce_len(params),
    };
    /* The LL Connection Parameters Request procedure where both
     * controllers have it, else NimBLE sends the L2CAP Connection
     * Parameter Update Request; the outcome comes as BLE_GAP_EVENT_CONN_UPDATE. */
    const int rc = ble_gap_update_params((uint16_t)conn, &upd);
    if (rc == BLE_HS_EALREADY) {
        return false;
    }
    if (rc != 0) {
        ESP_LOGW(TAG, "ble_gap_update_params(%u, %s) failed: %d", conn, what, rc);
    } else {
        ESP_LOGI(TAG, "asked for %s connection parameters: %u-%u x 1.25 ms, latency %u, timeout %u ms", what,
                 (unsigned)upd.itvl_min, (unsigned)upd.itvl_max, (unsigned)upd.latency,
                 (unsigned)upd.supervision_timeout * 10u);
    }
    return true;
}

/** Starts connectable, general-discoverable advertising; logs failures. */
static void
ota_gap_advertise(void)
{
    struct ble_hs_adv_fields fields;
    struct ble_hs_adv_fields rsp_fields;
    struct ble_gap_adv_params params;
    const char *name = ble_svc_gap_device_name();
    const size_t name_len = strlen(name);
    int rc;

    memset(&fields, 0, sizeof(fields));
    fields.flags = BLE_HS_ADV_F_DISC_GEN | BLE_HS_ADV_F_BREDR_UNSUP;
    /* Let the stack fill in the TX power it actually uses. */
    fields.tx_pwr_lvl_is_present = 1;
    fields.tx_pwr_lvl = BLE_HS_ADV_TX_PWR_LVL_AUTO;
    fields.name = (const uint8_t *)name;
    bool complete = true;
    fields.name_len = (uint8_t)ble_ota_bt_adv_name_len(name_len, &complete);
    fields.name_is_complete = complete ? 1 : 0;
    rc = ble_gap_adv_set_fields(&fields);
    if (rc != 0) {
        ESP_LOGE(TAG, "ble_gap_adv_set_fields failed: %d", rc);
        return;
    }

    memset(&rsp_fields, 0, sizeof(rsp_fields));
    rsp_fields.uuids128 = &ota_gatt_service_uuid;
    rsp_fields.num_uuids128 = 1;
    rsp_fields.uuids128_is_complete = 1;
    rc = ble_gap_adv_rsp_set_fields(&rsp_fields);
    if (rc != 0) {
        ESP_LOGE(TAG, "ble_gap_adv_rsp_set_fields failed: %d", rc);
        return;
    }

    /* Interval 0 selects the stack's default. */
    memset(&params, 0, sizeof(params));
    params.conn_mode = BLE_GAP_CONN_MODE_UND;
    params.disc_mode = BLE_GAP_DISC_MODE_GEN;
    rc = ble_gap_adv_start(s_own_addr_type, NULL, BLE_HS_FOREVER, &params, ota_gap_event, NULL);
    if (rc != 0) {
        ESP_LOGE(TAG, "ble_gap_adv_start failed: %d", rc);
        return;
    }
    ESP_LOGI(TAG, "advertising as \"%s\"", name);
    if (s_on_advertising != NULL) {
        s_on_advertising();
    }
}

/**
 * GAP event handler for the advertising instance and its connection.
 *
 * Runs on the host task, except BLE_GAP_EVENT_NOTIFY_TX, which NimBLE
 * reports from the task that called ble_gatts_notify_custom (the OTA task
 * for protocol v2): that event falls into the default branch and touches
 * nothing.
 *
 * @param event  the event
 * @param arg    unused
 * @return 0 (no event handled here expects another value)
 */
static int
ota_gap_event(struct ble_gap_event *event, void *arg)
{
    (void)arg;

    switch (event->type) {
    case BLE_GAP_EVENT_CONNECT:
        if (event->connect.status == 0) {
            ESP_LOGI(TAG, "connected, handle %u", (unsigned)event->connect.conn_handle);
            atomic_store(&s_conn_handle, event->connect.conn_handle);
            atomic_store(&s_control_subscribed, false);
            atomic_store(&s_command_subscribed, false);
            /* Every connection from legacy advertising starts on the LE
             * 1M PHY with 27-octet PDUs and the default ATT MTU, until
             * the procedures say otherwise (Core Vol 6, Part B, 4.5.10). */
            taskENTER_CRITICAL(&s_link_lock);
            s_link = (ble_ota_link_info_t){
                .tx_phy = BLE_OTA_PHY_1M,
                .rx_phy = BLE_OTA_PHY_1M,
                .tx_octets = 27,
                .rx_octets = 27,
                .att_mtu = BLE_ATT_MTU_DFLT,
            };
            taskEXIT_CRITICAL(&s_link_lock);
            ota_gap_link_from_conn(event->connect.conn_handle);
            /* The core counts from here the time a link has to authenticate. */
            ota_gatt_on_connect();
        } else {
            ESP_LOGW(TAG, "connection failed: %d", event->connect.status);
            ota_gap_advertise();
        }
        break;

    case BLE_GAP_EVENT_DISCONNECT:
        ESP_LOGI(TAG, "disconnected, handle %u, reason 0x%x", (unsigned)event->disconnect.conn.conn_handle,
                 (unsigned)event->disconnect.reason);
        atomic_store(&s_conn_handle, BLE_HS_CONN_HANDLE_NONE);
        atomic_store(&s_control_subscribed, false);
        atomic_store(&s_command_subscribed, false);
        taskENTER_CRITICAL(&s_link_lock);
        s_link = (ble_ota_link_info_t){ 0 };
        taskEXIT_CRITICAL(&s_link_lock);
        /* The core aborts a seed transfer cut short (so the next REQUEST
         * starts clean) and suspends a v2 transfer (so BEGIN can resume
         * it). Never blocks: see ota_task_link_event. */
        ota_gatt_on_disconnect();
        ota_gap_advertise();
        break;

    case BLE_GAP_EVENT_ADV_COMPLETE:
        /* Only ends early on an error: advertising runs without timeout. */
        ESP_LOGI(TAG, "advertising ended, reason %d", event->adv_complete.reason);
        if (atomic_load(&s_conn_handle) == BLE_HS_CONN_HANDLE_NONE) {
            ota_gap_advertise();
        }
        break;

    case BLE_GAP_EVENT_SUBSCRIBE:
        if (event->subscribe.attr_handle == ota_gatt_control_handle()) {
            atomic_store(&s_control_subscribed, event->subscribe.cur_notify != 0);
            ESP_LOGI(TAG, "OTA Control notifications %s", event->subscribe.cur_notify != 0 ? "on" : "off");
        } else if (event->subscribe.attr_handle == ota_gatt_command_handle()) {
            atomic_store(&s_command_subscribed, event->subscribe.cur_notify != 0);
            ESP_LOGI(TAG, "OTA Command notifications %s", event->subscribe.cur_notify != 0 ? "on" : "off");
        }
        break;

    case BLE_GAP_EVENT_MTU:
        ESP_LOGI(TAG, "MTU %u on handle %u (channel 0x%04x): values up to %u bytes", (unsigned)event->mtu.value,
                 (unsigned)event->mtu.conn_handle, (unsigned)event->mtu.channel_id, (unsigned)(event->mtu.value - 3));
        taskENTER_CRITICAL(&s_link_lock);
        s_link.att_mtu = event->mtu.value;
        taskEXIT_CRITICAL(&s_link_lock);
        break;

    case BLE_GAP_EVENT_CONN_UPDATE:
        /* After our request or the central's own choice; a refusal keeps
         * the parameters as they were. */
        if (event->conn_update.status != 0) {
            ESP_LOGW(TAG, "connection parameters not updated: %d", event->conn_update.status);
        }
        ota_gap_link_from_conn(event->conn_update.conn_handle);
        break;

    case BLE_GAP_EVENT_PHY_UPDATE_COMPLETE:
        if (event->phy_updated.status != 0) {
            ESP_LOGW(TAG, "PHY update failed: %d", event->phy_updated.status);
            break;
        }
        taskENTER_CRITICAL(&s_link_lock);
        s_link.tx_phy = event->phy_updated.tx_phy;
        s_link.rx_phy = event->phy_updated.rx_phy;
        taskEXIT_CRITICAL(&s_link_lock);
        ESP_LOGI(TAG, "PHY: TX %u, RX %u (1: 1M, 2: 2M, 3: Coded)", (unsigned)event->phy_updated.tx_phy,
                 (unsigned)event->phy_updated.rx_phy);
        break;

    case BLE_GAP_EVENT_DATA_LEN_CHG:
        /* esp-nimble (ESP-IDF v5.3) leaves this event's conn_handle 0
         * (ble_gap_rx_data_len_change): one link at a time, so it is ours. */
        taskENTER_CRITICAL(&s_link_lock);
        s_link.tx_octets = event->data_len_chg.max_tx_octets;
        s_link.rx_octets = event->data_len_chg.max_rx_octets;
        taskEXIT_CRITICAL(&s_link_lock);
        ESP_LOGI(TAG, "data length: TX %u, RX %u octets", (unsigned)event->data_len_chg.max_tx_octets,
                 (unsigned)event->data_len_chg.max_rx_octets);
        break;

    default:
        break;
    }
    return 0;
}

/** The host and controller are in sync: pick an address and advertise. */
static void
ota_gap_on_sync(void)
{
    uint8_t addr[6] = { 0 };
    int rc;

    rc = ble_hs_util_ensure_addr(0);
    if (rc != 0) {
        ESP_LOGE(TAG, "no usable BLE address: %d", rc);
        return;
    }
    rc = ble_hs_id_infer_auto(0, &s_own_addr_type);
    if (rc != 0) {
        ESP_LOGE(TAG, "ble_hs_id_infer_auto failed: %d", rc);
        return;
    }
    rc = ble_hs_id_copy_addr(s_own_addr_type, addr, NULL);
    if (rc != 0) {
        ESP_LOGE(TAG, "ble_hs_id_copy_addr failed: %d", rc);
        return;
    }
    ESP_LOGI(TAG, "address %02x:%02x:%02x:%02x:%02x:%02x", addr[5], addr[4], addr[3], addr[2], addr[1], addr[0]);
    ota_gap_advertise();
}

/** The host reset itself (controller error); it syncs again afterwards. */
static void
ota_gap_on_reset(int reason)
{
    ESP_LOGW(TAG, "NimBLE host reset, reason %d", reason);
}

void
ota_gap_init(const char *device_name, ota_gap_advertising_fn *on_advertising)
{
    int rc;

    s_on_advertising = on_advertising;
    ble_hs_cfg.sync_cb = ota_gap_on_sync;
    ble_hs_cfg.reset_cb = ota_gap_on_reset;

    /* Not fatal: the device stays updatable under the stack's default name
     * and can still be found by the service UUID in the scan response. */
    rc = ble_svc_gap_device_name_set(device_name);
    if (rc != 0) {
        ESP_LOGE(TAG, "device name \"%s\" rejected (%d): longer than %d bytes?", device_name, rc,
                 CONFIG_BT_NIMBLE_GAP_DEVICE_NAME_MAX_LEN);
    }
}

/* One notification being handed to NimBLE (ota_gap_notify). */
typedef struct {
    uint16_t conn;
    uint16_t attr_handle;
    const uint8_t *data;
    uint16_t len;
    int rc; /* the last attempt's NimBLE result */
} ota_gap_notification_t;

static ble_ota_notify_result_t
ota_gap_notify_once(void *ctx)
{
    ota_gap_notification_t *n = ctx;
    struct os_mbuf *om = ble_hs_mbuf_from_flat(n->data, n->len);

    if (om == NULL) {
        n->rc = BLE_HS_ENOMEM;
        return BLE_OTA_NOTIFY_NO_BUFFER;
    }
    /* Consumes om whatever the outcome. */
    n->rc = ble_gatts_notify_custom(n->conn, n->attr_handle, om);
    if (n->rc == 0) {
        return BLE_OTA_NOTIFY_SENT;
    }
    return n->rc == BLE_HS_ENOMEM ? BLE_OTA_NOTIFY_NO_BUFFER : BLE_OTA_NOTIFY_FAILED;
}

static void
ota_gap_wait_ms(void *ctx, uint32_t ms)
{
    (void)ctx;
    vTaskDelay(pdMS_TO_TICKS(ms) + 1); /* + 1: at least ms, whatever the tick */
}

/**
 * Sends a notification of attr_handle's value if a client is connected and
 * subscribed, tried again while no mbuf is free as ble_ota_bt.h says.
 * Safe from any task: ble_gatts_notify_custom takes the host lock
 * (ble_hs_lock) around the connection lookup and the L2CAP send
 * (esp-nimble host/src/ble_att_cmd.c, ble_att_tx), and the mbuf pools are
 * guarded by critical sections.
 */
static void
ota_gap_notify(uint16_t attr_handle, const atomic_bool *subscribed, const char *what, const uint8_t *data, size_t len)
{
    const unsigned conn = atomic_load(&s_conn_handle);

    if (conn == BLE_HS_CONN_HANDLE_NONE || !atomic_load(subscribed)) {
        ESP_LOGW(TAG, "%s 0x%02x not notified: no subscribed client", what, len > 0 ? data[0] : 0u);
        return;
    }
    if (len > UINT16_MAX) {
        ESP_LOGE(TAG, "%s notification of %u bytes", what, (unsigned)len);
        return;
    }
    /* NimBLE cuts a notification to the ATT MTU without a word (ble_att_tx):
     * the client would get an answer whose MAC cannot verify. Say why instead. */
    const uint16_t mtu = ble_att_mtu((uint16_t)conn);
    if (mtu > 3 && len > (size_t)mtu - 3) {
        ESP_LOGE(TAG, "%s 0x%02x of %u bytes not notified: the ATT MTU is %u (a client must exchange a larger one)",
                 what, len > 0 ? data[0] : 0u, (unsigned)len, (unsigned)mtu);
        return;
    }
    ota_gap_notification_t n = {
        .conn = (uint16_t)conn,
        .attr_handle = attr_handle,
        .data = data,
        .len = (uint16_t)len,
        .rc = 0,
    };
    const ble_ota_notifier_t notifier = { .send = ota_gap_notify_once, .wait_ms = ota_gap_wait_ms, .ctx = &n };
    /* The host task must not sleep waiting for mbufs it frees itself. */
    if (ble_ota_bt_notify(&notifier, ota_task_is_current(), NULL) != BLE_OTA_NOTIFY_SENT) {
        ESP_LOGE(TAG, "%s 0x%02x notification failed: %d%s", what, len > 0 ? data[0] : 0u, n.rc,
                 n.rc == BLE_HS_ENOMEM ? " (no mbuf)" : "");
    }
}

void
ota_gap_notify_control(uint8_t value)
{
    ota_gap_notify(ota_gatt_control_handle(), &s_control_subscribed, "OTA Control", &value, sizeof(value));
}

void
ota_gap_notify_command(const uint8_t *data, size_t len)
{
    ota_gap_notify(ota_gatt_command_handle(), &s_command_subscribed, "OTA Command", data, len);
}

bool
ota_gap_connected(void)
{
    return atomic_load(&s_conn_handle) != BLE_HS_CONN_HANDLE_NONE;
}

void
ota_gap_terminate(void)
{
    const unsigned conn = atomic_load(&s_conn_handle);

    if (conn == BLE_HS_CONN_HANDLE_NONE) {
        return;
    }
    /* Takes the host lock itself: safe from the OTA task. The link ends
     * with a BLE_GAP_EVENT_DISCONNECT, like any other. */
    const int rc = ble_gap_terminate((uint16_t)conn, BLE_ERR_REM_USER_CONN_TERM);
    if (rc != 0 && rc != BLE_HS_ENOTCONN && rc != BLE_HS_EALREADY) {
        ESP_LOGE(TAG, "ble_gap_terminate(%u) failed: %d", conn, rc);
    }
}
