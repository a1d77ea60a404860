/*
 * The defaults of the application's part (ble_ota_app.h): no application
 * runs beside the OTA service, and it is always healthy. An application
 * replaces this file with its own start and its own health check.
 */
#include "ble_ota_app.h"

void
ble_ota_app_start(void)
{
}

bool
ble_ota_app_healthy(void)
{
    return true;
}
