# Stops the build unless the firmware has an update key (CONFIG_BLE_OTA_AUTH_KEY,
# 64 hex digits) or opted out of authentication explicitly
# (CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED): a device that anyone in radio range
# can reflash is never built by accident. Included by CMakeLists.txt once the
# sdkconfig values are known; test/firmware-config.test.ts runs it with
# `cmake -P` for each case.
string(LENGTH "${CONFIG_BLE_OTA_AUTH_KEY}" ble_ota_key_length)
if(ble_ota_key_length EQUAL 0 AND NOT CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED)
    message(FATAL_ERROR
        "No BLE OTA update key. Set one: idf.py menuconfig > BLE OTA firmware > Update key "
        "(64 hex digits, e.g. from: python -c \"import secrets; print(secrets.token_hex(32))\"), "
        "or put CONFIG_BLE_OTA_AUTH_KEY=\"<64 hex digits>\" in sdkconfig. To build a development "
        "board that anyone in range may update, enable BLE OTA firmware > Allow a build without an "
        "update key (CONFIG_BLE_OTA_ALLOW_UNAUTHENTICATED=y).")
endif()
if(NOT ble_ota_key_length EQUAL 0
   AND (NOT ble_ota_key_length EQUAL 64 OR NOT "${CONFIG_BLE_OTA_AUTH_KEY}" MATCHES "^[0-9a-fA-F]+$"))
    message(FATAL_ERROR
        "CONFIG_BLE_OTA_AUTH_KEY must be 64 hex digits (32 bytes); it has ${ble_ota_key_length} "
        "characters. Set it again in idf.py menuconfig > BLE OTA firmware > Update key.")
endif()
