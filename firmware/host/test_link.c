/*
 * What the core asks of the link, and when (ble_ota_link.c), and what
 * OTA Info reports of it: on the host platform, with the fixture's clock.
 */
#include "test_link.h"

#include <string.h>

#include "ble_ota_le.h"
#include "ble_ota_link.h"
#include "ble_ota_sha256.h"
#include "test.h"
#include "test_fixture.h"

static bool s_busy;   /* the port's link_conn_params finds a procedure under way */
static int s_refused; /* asks it answered busy */

static bool
busy_conn_params(void *user, ble_ota_link_profile_t profile, const ble_ota_conn_params_t *params)
{
    (void)user;
    (void)profile;
    (void)params;
    if (s_busy) {
        s_refused++;
    }
    return !s_busy;
}

/* BEGIN of the fixture's image (plain, no flags): the transfer opens. */
static void
begin(void)
{
    uint8_t req[BLE_OTA_BEGIN_SIZE] = { BLE_OTA_CMD_BEGIN };

    ble_ota_put_le32(req + 1, (uint32_t)s_image_len);
    ble_ota_sha256(s_image, s_image_len, req + 5);
    ble_ota_put_le16(req + 37, s_fx.dev.chip_id);
    CHECK_EQ(ble_ota_core_command_write(&s_fx.core, req, sizeof(req)), BLE_OTA_OK);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_RECEIVING);
}

/* Streams image bytes [from, to) in 240-byte values. */
static void
send(size_t from, size_t to)
{
    uint8_t value[BLE_OTA_STREAM_HEADER + 240];

    for (size_t off = from; off < to; off += 240) {
        const size_t n = to - off < 240 ? to - off : 240;
        ble_ota_put_le32(value, (uint32_t)off);
        memcpy(value + BLE_OTA_STREAM_HEADER, s_image + off, n);
        CHECK_EQ(ble_ota_core_stream_write(&s_fx.core, value, BLE_OTA_STREAM_HEADER + n), BLE_OTA_OK);
    }
}

static void
tick_after(uint32_t ms)
{
    s_fx.clock_ms += ms;
    ble_ota_core_tick(&s_fx.core);
}

static bool
asked(ble_ota_link_profile_t profile)
{
    const ble_ota_conn_params_t *want = ble_ota_link_params(profile);
    return s_fx.dev.asked_profile == profile && want != NULL &&
           memcmp(&s_fx.dev.asked_params, want, sizeof(*want)) == 0;
}

static uint8_t
info_link_request(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE];

    if (ble_ota_core_info_read(&s_fx.core, inf, sizeof(inf)) != BLE_OTA_INFO_SIZE) {
        return 0xFF; /* no value: matches no profile */
    }
    return inf[BLE_OTA_INFO_OFF_LINK_REQUEST];
}

/* The parameters follow the Core Specification's rules (else NimBLE's
 * ble_gap_update_params refuses them) and the flash: the transfer's
 * supervision timeout outlasts a 64 KB block erase at its datasheet
 * maximum (2 s, W25Q32JV) with room to spare. */
static void
test_link_params(void)
{
    const ble_ota_conn_params_t *t = ble_ota_link_params(BLE_OTA_LINK_TRANSFER);
    const ble_ota_conn_params_t *i = ble_ota_link_params(BLE_OTA_LINK_IDLE);

    CHECK(t != NULL && i != NULL);
    CHECK(ble_ota_link_params(BLE_OTA_LINK_NONE) == NULL);
    CHECK(ble_ota_link_params_valid(t));
    CHECK(ble_ota_link_params_valid(i));
    CHECK_EQ(t->itvl_min, 6); /* 7.5 ms */
    CHECK(t->itvl_max <= 12); /* 15 ms */
    CHECK_EQ(t->latency, 0);
    CHECK(t->supervision_timeout * 10u >= 2u * 2000u);
    CHECK(t->supervision_timeout <= 600); /* 6 s: centrals refuse much longer */
    /* Idle: the radio may sleep, the link still survives a flash stall. */
    CHECK(i->itvl_min > t->itvl_max);
    CHECK(i->latency > 0);
    CHECK(i->supervision_timeout * 10u >= 2u * 2000u);
    /* The rules themselves. */
    ble_ota_conn_params_t p = *t;
    p.supervision_timeout = (uint16_t)((1u + p.latency) * p.itvl_max / 4u); /* not longer than 2 max intervals */
    CHECK(!ble_ota_link_params_valid(&p));
    p = *t;
    p.itvl_min = 5;
    CHECK(!ble_ota_link_params_valid(&p));
    p = *t;
    p.itvl_min = (uint16_t)(p.itvl_max + 1);
    CHECK(!ble_ota_link_params_valid(&p));
    p = *i;
    p.latency = 500;
    CHECK(!ble_ota_link_params_valid(&p));
    CHECK(!ble_ota_link_params_valid(NULL));
    CHECK_EQ(BLE_OTA_LINK_TX_OCTETS, 251);
    CHECK_EQ(BLE_OTA_LINK_TX_TIME_US, (251 + 14) * 8);
}

/* On connection: the largest data length and the 2M PHY, and nothing of
 * the connection parameters (the central's choice stays until a transfer). */
static void
test_link_connect_asks_data_path(void)
{
    CHECK_OK(fx_setup());
    CHECK_EQ(s_fx.dev.data_path_asks, 1);
    CHECK_EQ(s_fx.dev.asked_tx_octets, BLE_OTA_LINK_TX_OCTETS);
    CHECK_EQ(s_fx.dev.asked_tx_time_us, BLE_OTA_LINK_TX_TIME_US);
    CHECK(s_fx.dev.asked_2m);
    CHECK_EQ(s_fx.dev.conn_param_asks, 0);
    CHECK_EQ(info_link_request(), BLE_OTA_LINK_NONE);
    tick_after(BLE_OTA_LINK_IDLE_AFTER_MS * 2);
    CHECK_EQ(s_fx.dev.conn_param_asks, 0);
    /* Once per link: again on the next one. */
    fx_reconnect();
    CHECK_EQ(s_fx.dev.data_path_asks, 2);
}

/* v2: transfer parameters from BEGIN, once, kept through END (RESTART
 * follows); idle ones once nothing more comes. */
static void
test_link_v2_transfer_then_idle(void)
{
    CHECK_OK(fx_setup());
    begin();
    CHECK_EQ(s_fx.dev.conn_param_asks, 1);
    CHECK(asked(BLE_OTA_LINK_TRANSFER));
    CHECK_EQ(info_link_request(), BLE_OTA_LINK_TRANSFER);
    for (size_t off = 0; off < s_image_len; off += 4096) {
        send(off, off + 4096 < s_image_len ? off + 4096 : s_image_len);
        tick_after(200);
    }
    CHECK_EQ(s_fx.dev.conn_param_asks, 1); /* not once per packet or tick */
    uint8_t end = BLE_OTA_CMD_END;
    CHECK_EQ(ble_ota_core_command_write(&s_fx.core, &end, 1), BLE_OTA_OK);
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_COMPLETE);
    CHECK_EQ(s_fx.dev.conn_param_asks, 1);
    CHECK_EQ(info_link_request(), BLE_OTA_LINK_TRANSFER);
    tick_after(200);
    CHECK_EQ(s_fx.dev.conn_param_asks, 1);
    /* Complete, and no RESTART came: idle once the time has passed. */
    tick_after(BLE_OTA_LINK_IDLE_AFTER_MS);
    CHECK_EQ(s_fx.dev.conn_param_asks, 2);
    CHECK(asked(BLE_OTA_LINK_IDLE));
    CHECK_EQ(info_link_request(), BLE_OTA_LINK_IDLE);
    tick_after(BLE_OTA_LINK_IDLE_AFTER_MS * 2);
    CHECK_EQ(s_fx.dev.conn_param_asks, 2);
}

/* A transfer whose data stops: idle parameters once no data came for
 * BLE_OTA_LINK_IDLE_AFTER_MS; transfer parameters again with the next packet. */
static void
test_link_stalled_transfer_idles(void)
{
    CHECK_OK(fx_setup());
    begin();
    send(0, 4096);
    tick_after(BLE_OTA_LINK_IDLE_AFTER_MS - 200);
    CHECK_EQ(s_fx.dev.conn_param_asks, 1);
    /* Data within the time keeps the transfer's parameters. */
    send(4096, 8192);
    tick_after(BLE_OTA_LINK_IDLE_AFTER_MS - 200);
    tick_after(100);
    CHECK_EQ(s_fx.dev.conn_param_asks, 1);
    tick_after(BLE_OTA_LINK_IDLE_AFTER_MS);
    CHECK_EQ(s_fx.dev.conn_param_asks, 2);
    CHECK(asked(BLE_OTA_LINK_IDLE));
    CHECK_EQ(s_fx.core.v2.state, BLE_OTA_V2_RECEIVING);
    send(8192, 8432);
    CHECK_EQ(s_fx.dev.conn_param_asks, 3);
    CHECK(asked(BLE_OTA_LINK_TRANSFER));
    tick_after(200);
    CHECK_EQ(s_fx.dev.conn_param_asks, 3);
}

/* A port with a procedure under way: asked again at the tick, never once
 * per packet; a lost link forgets what was asked. */
static void
test_link_busy_port_asked_at_tick(void)
{
    CHECK_OK(fx_setup());
    s_fx.dev.hooks.link_conn_params = busy_conn_params;
    s_busy = true;
    s_refused = 0;
    begin();
    CHECK_EQ(s_refused, 1);
    send(0, 4096);
    CHECK_EQ(s_refused, 1);
    CHECK_EQ(info_link_request(), BLE_OTA_LINK_NONE);
    tick_after(200);
    CHECK_EQ(s_refused, 2);
    s_busy = false;
    send(4096, 8192);
    CHECK_EQ(s_fx.dev.conn_param_asks, 2);
    tick_after(200);
    CHECK_EQ(s_fx.dev.conn_param_asks, 3);
    CHECK(asked(BLE_OTA_LINK_TRANSFER));
    CHECK_EQ(info_link_request(), BLE_OTA_LINK_TRANSFER);
    /* The link drops: the transfer suspends, nothing is asked of a link
     * that is gone; the next link starts from the central's choice. */
    ble_ota_core_disconnected(&s_fx.core);
    tick_after(BLE_OTA_LINK_IDLE_AFTER_MS * 2);
    CHECK_EQ(s_fx.dev.conn_param_asks, 3);
    ble_ota_core_connected(&s_fx.core);
    CHECK_EQ(info_link_request(), BLE_OTA_LINK_NONE);
    begin(); /* resumes */
    CHECK_EQ(s_fx.dev.conn_param_asks, 4);
    CHECK(asked(BLE_OTA_LINK_TRANSFER));
}

/* The seed protocol: transfer parameters from REQUEST, kept at DONE (the device restarts). */
static void
test_link_seed_transfer(void)
{
    CHECK_OK(fx_setup());
    CHECK_EQ(packet_size(240), BLE_OTA_OK);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_REQUEST), BLE_OTA_OK);
    CHECK_EQ(s_fx.dev.conn_param_asks, 1);
    CHECK(asked(BLE_OTA_LINK_TRANSFER));
    CHECK_EQ(send_packets(s_image, s_image_len, 240), BLE_OTA_OK);
    CHECK_EQ(s_fx.dev.conn_param_asks, 1);
    CHECK_EQ(ctrl(BLE_OTA_CTRL_DONE), BLE_OTA_OK);
    CHECK_EQ(last_notify(), BLE_OTA_CTRL_DONE_ACK);
    CHECK_EQ(s_fx.dev.conn_param_asks, 1);
    CHECK(asked(BLE_OTA_LINK_TRANSFER));
}

/* OTA Info carries the link the port reports, at its info_version 3
 * offsets, in the controller's units; a port that reports none gives zeros. */
static void
test_link_info_fields(void)
{
    uint8_t inf[BLE_OTA_INFO_SIZE];

    CHECK_OK(fx_setup());
    s_fx.dev.link = (ble_ota_link_info_t){
        .conn_itvl = 12,
        .conn_latency = 0,
        .supervision_timeout = 500,
        .tx_phy = BLE_OTA_PHY_2M,
        .rx_phy = BLE_OTA_PHY_1M,
        .tx_octets = 27,
        .rx_octets = 251,
        .att_mtu = 256,
    };
    begin();
    CHECK_EQ(ble_ota_core_info_read(&s_fx.core, inf, sizeof(inf)), BLE_OTA_INFO_SIZE);
    CHECK(inf[BLE_OTA_INFO_OFF_INFO_VERSION] >= 3); /* the link fields arrived with info_version 3 */
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_CONN_INTERVAL), 12);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_CONN_LATENCY), 0);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_SUPERVISION_TIMEOUT), 500);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_TX_PHY], BLE_OTA_PHY_2M);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_RX_PHY], BLE_OTA_PHY_1M);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_TX_OCTETS), 27);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_RX_OCTETS), 251);
    CHECK_EQ(ble_ota_get_le16(inf + BLE_OTA_INFO_OFF_ATT_MTU), 256);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LINK_REQUEST], BLE_OTA_LINK_TRANSFER);
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LINK_REQUEST + 1], 0); /* reserved */
    CHECK_EQ(BLE_OTA_INFO_OFF_LINK_REQUEST + 2, BLE_OTA_INFO_SIZE_V3);

    /* A platform without the link calls: nothing asked, zeros reported. */
    s_fx.dev.port.link_data_path = NULL;
    s_fx.dev.port.link_conn_params = NULL;
    s_fx.dev.port.link_info = NULL;
    fx_reconnect();
    begin();
    CHECK_EQ(ble_ota_core_info_read(&s_fx.core, inf, sizeof(inf)), BLE_OTA_INFO_SIZE);
    for (int i = BLE_OTA_INFO_OFF_CONN_INTERVAL; i < BLE_OTA_INFO_OFF_LINK_REQUEST; i++) {
        CHECK_EQ(inf[i], 0);
    }
    /* The core still knows what it would have asked. */
    CHECK_EQ(inf[BLE_OTA_INFO_OFF_LINK_REQUEST], BLE_OTA_LINK_TRANSFER);
}

/* The event length hinted with a request covers the whole longest
 * interval, in the controller's 0.625 ms units, for every profile. */
static void
test_link_ce_length_hint(void)
{
    const ble_ota_link_profile_t profiles[] = { BLE_OTA_LINK_TRANSFER, BLE_OTA_LINK_IDLE };

    for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++) {
        const ble_ota_conn_params_t *p = ble_ota_link_params(profiles[i]);
        CHECK(p != NULL);
        CHECK_EQ(ble_ota_link_max_ce_len(p) * 625u, p->itvl_max * 1250u);
    }
    const ble_ota_conn_params_t longest = {
        .itvl_min = 3200, .itvl_max = 3200, .latency = 0, .supervision_timeout = 3200
    };
    CHECK_EQ(ble_ota_link_max_ce_len(&longest), 6400); /* 4 s: fits its u16 */
}

void
test_link_run_all(void)
{
    RUN(test_link_params);
    RUN(test_link_connect_asks_data_path);
    RUN(test_link_v2_transfer_then_idle);
    RUN(test_link_stalled_transfer_idles);
    RUN(test_link_busy_port_asked_at_tick);
    RUN(test_link_seed_transfer);
    RUN(test_link_info_fields);
    RUN(test_link_ce_length_hint);
}
