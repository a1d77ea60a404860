/*
 * The defaults of the application's part (ble_ota_app.h): no application
 * runs beside the OTA service, it serves no GATT services of its own, and
 * it is always healthy. An application
 * replaces this file with its own start and its own health check.
 */
#include "ble_ota_app.h"

int
ble_ota_app_gatt_init(void)
{
    return 0;
}

void
ble_ota_app_start(void)
{
}

bool
ble_ota_app_healthy(void)
{
    return true;
}
