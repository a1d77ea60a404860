/*
 * What the device asks of its link, and when (ble_ota_link.h).
 *
 * A transfer is link-bound: packets per connection event and the interval
 * set its pace. So on every link the device asks for the largest data
 * length and the 2M PHY (neither costs anything while idle), and while a
 * transfer receives, for a short interval without latency; once nothing
 * has come for BLE_OTA_LINK_IDLE_AFTER_MS, or a transfer ends without
 * completing, for parameters that let the radio sleep. A complete transfer
 * keeps the transfer's: RESTART and CONFIRM follow at once, and a
 * parameter update then would only slow them and the report of the link
 * the image went over. The central decides in the end: what it granted shows in
 * OTA Info. The state is derived after each call into the core, so no
 * path that starts or ends a transfer can forget to tell the link.
 */
#include "ble_ota_internal.h"

/* Intervals in 1.25 ms units, timeouts in 10 ms units. */
static const ble_ota_conn_params_t k_transfer = {
    .itvl_min = 6,              /* 7.5 ms, the shortest the specification allows */
    .itvl_max = 12,             /* 15 ms */
    .latency = 0,               /* every event: ACKs go out at once */
    .supervision_timeout = 500, /* 5 s > a 2 s block erase at datasheet maximum */
};

static const ble_ota_conn_params_t k_idle = {
    .itvl_min = 24,             /* 30 ms */
    .itvl_max = 40,             /* 50 ms */
    .latency = 4,               /* listens every 250 ms at worst when idle */
    .supervision_timeout = 500, /* 5 s */
};

const ble_ota_conn_params_t *
ble_ota_link_params(ble_ota_link_profile_t profile)
{
    switch (profile) {
    case BLE_OTA_LINK_TRANSFER:
        return &k_transfer;
    case BLE_OTA_LINK_IDLE:
        return &k_idle;
    case BLE_OTA_LINK_NONE:
    default:
        return NULL;
    }
}

bool
ble_ota_link_params_valid(const ble_ota_conn_params_t *p)
{
    if (p == NULL || p->itvl_min < 6 || p->itvl_max > 3200 || p->itvl_min > p->itvl_max) {
        return false;
    }
    if (p->latency > 499 || p->supervision_timeout < 10 || p->supervision_timeout > 3200) {
        return false;
    }
    /* timeout * 10 ms > (1 + latency) * itvl_max * 1.25 ms * 2 */
    return (uint32_t)p->supervision_timeout * 4u > (1u + p->latency) * (uint32_t)p->itvl_max;
}

uint16_t
ble_ota_link_max_ce_len(const ble_ota_conn_params_t *params)
{
    /* 1.25 ms units to 0.625 ms units; itvl_max is at most 3200. */
    return (uint16_t)(params->itvl_max * 2u);
}

void
ble_ota_link_connected(ble_ota_core_t *core)
{
    core->link = (ble_ota_link_t){ .data_path_pending = true };
}

void
ble_ota_link_disconnected(ble_ota_core_t *core)
{
    core->link = (ble_ota_link_t){ 0 };
}

/* Asks the port for the profile's parameters; true when it took them. */
static bool
link_ask(ble_ota_core_t *core, ble_ota_link_profile_t profile)
{
    const ble_ota_port_t *port = core->port;

    if (port->link_conn_params == NULL) {
        return true; /* a platform that cannot ask: nothing to retry */
    }
    return port->link_conn_params(port->ctx, profile, ble_ota_link_params(profile));
}

void
ble_ota_link_update(ble_ota_core_t *core, bool from_tick)
{
    const ble_ota_port_t *port = core->port;
    ble_ota_link_t *link = &core->link;

    if (!core->auth.connected) {
        return;
    }
    if (link->data_path_pending) {
        link->data_path_pending = port->link_data_path != NULL &&
                                  !port->link_data_path(port->ctx, BLE_OTA_LINK_TX_OCTETS, BLE_OTA_LINK_TX_TIME_US,
                                                        true);
    }

    const bool receiving = core->v2.state == BLE_OTA_V2_RECEIVING || core->state == BLE_OTA_STATE_RECEIVING;
    const bool finishing = core->v2.state == BLE_OTA_V2_COMPLETE || core->state == BLE_OTA_STATE_RESTARTING;
    if (receiving && !link->receiving) {
        /* A transfer starts (or resumes): its data comes next. */
        link->active = true;
    }
    if (from_tick || (receiving && !link->receiving)) {
        if (link->active) {
            link->active_at_ms = port->now_ms(port->ctx);
            link->active = !from_tick; /* the tick has seen it; a start counts until then */
        }
    }
    link->receiving = receiving;

    ble_ota_link_profile_t want = link->profile;
    if (receiving && (link->active || link->profile != BLE_OTA_LINK_IDLE)) {
        want = BLE_OTA_LINK_TRANSFER;
    }
    if (link->profile == BLE_OTA_LINK_TRANSFER || link->busy == BLE_OTA_LINK_TRANSFER) {
        const bool stalled = from_tick && !link->active &&
                             port->now_ms(port->ctx) - link->active_at_ms >= BLE_OTA_LINK_IDLE_AFTER_MS;
        if ((!receiving && !finishing) || stalled) {
            want = BLE_OTA_LINK_IDLE;
        }
    }
    if (want == link->profile) {
        link->busy = BLE_OTA_LINK_NONE;
        return;
    }
    if (want == link->busy && !from_tick) {
        return; /* the port was busy: the tick asks again, not every packet */
    }
    if (link_ask(core, want)) {
        link->profile = want;
        link->busy = BLE_OTA_LINK_NONE;
    } else {
        link->busy = want;
    }
}
