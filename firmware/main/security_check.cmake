# Stops the build of a firmware that would take images its owner did not
# sign: ESP-IDF's signed app verification (sdkconfig.defaults) must stay on
# unless the build opts out (CONFIG_BLE_OTA_ALLOW_UNSIGNED_IMAGES). With
# build-time signing on, the signing key must exist: ESP-IDF says so too,
# but only once the build runs; this says it at configure time, with the
# way to make one without ESP-IDF's Python tools.
#
# Included by CMakeLists.txt once the sdkconfig values are known (with
# BLE_OTA_PROJECT_DIR, the project folder the key path is relative to);
# test/firmware-config.test.ts runs it with `cmake -P` for each case.
if(NOT CONFIG_SECURE_SIGNED_ON_UPDATE AND NOT CONFIG_BLE_OTA_ALLOW_UNSIGNED_IMAGES)
    message(FATAL_ERROR
        "Signed app verification is off: this firmware would install any image whoever holds "
        "the update key sends. Turn it back on (idf.py menuconfig > Security features > Require "
        "signed app images, with Verify app signature on update; sdkconfig.defaults does), or, for "
        "a development board only, enable BLE OTA firmware > Allow a build that takes unsigned "
        "images (CONFIG_BLE_OTA_ALLOW_UNSIGNED_IMAGES=y).")
endif()
if(CONFIG_SECURE_SIGNED_ON_UPDATE AND CONFIG_SECURE_BOOT_BUILD_SIGNED_BINARIES)
    get_filename_component(ble_ota_signing_key "${CONFIG_SECURE_BOOT_SIGNING_KEY}" ABSOLUTE
                           BASE_DIR "${BLE_OTA_PROJECT_DIR}")
    if(NOT EXISTS "${ble_ota_signing_key}")
        message(FATAL_ERROR
            "No signing key at ${ble_ota_signing_key}. Every image this firmware takes over the air "
            "must be signed with it. Make one on the machine that builds your images (it never needs "
            "to be on the Node-RED machine): npx esp32-ble-ota keygen --out "
            "${CONFIG_SECURE_BOOT_SIGNING_KEY} (or espsecure.py generate_signing_key --version 2 "
            "${CONFIG_SECURE_BOOT_SIGNING_KEY}), and keep it out of version control. The first "
            "image goes to the device over USB; from then on it accepts only images signed with "
            "that key (docs/SECURITY.md).")
    endif()
endif()
