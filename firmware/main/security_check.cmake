# Stops the build of a firmware that would take images its owner did not
# sign: ESP-IDF's signed app verification (sdkconfig.defaults) must stay on
# unless the build opts out (CONFIG_BLE_OTA_ALLOW_UNSIGNED_IMAGES). With
# build-time signing on, the signing key must exist: ESP-IDF says so too,
# but only once the build runs; this says it at configure time, with the
# way to make one without ESP-IDF's Python tools.
#
# The key must also be of the type the chip's scheme verifies: ESP-IDF signs
# with whatever key it finds, and a device whose scheme is ECDSA (the
# ESP32-C2 has no RSA) then refuses every update signed with an RSA key.
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
    # What the scheme verifies, and how to make such a key.
    if(CONFIG_SECURE_SIGNED_APPS_ECDSA_V2_SCHEME AND CONFIG_SECURE_BOOT_ECDSA_KEY_LEN_192_BITS)
        set(ble_ota_key_type "EC")
        set(ble_ota_key_name "ECDSA P-192")
        set(ble_ota_keygen "espsecure.py generate_signing_key --version 2 --scheme ecdsa192 "
                           "${CONFIG_SECURE_BOOT_SIGNING_KEY}")
    elseif(CONFIG_SECURE_SIGNED_APPS_ECDSA_V2_SCHEME)
        set(ble_ota_key_type "EC")
        set(ble_ota_key_name "ECDSA P-256")
        set(ble_ota_keygen "npx esp32-ble-ota keygen --scheme ecdsa256 --out ${CONFIG_SECURE_BOOT_SIGNING_KEY} "
                           "(or espsecure.py generate_signing_key --version 2 --scheme ecdsa256 "
                           "${CONFIG_SECURE_BOOT_SIGNING_KEY})")
    else()
        set(ble_ota_key_type "RSA")
        set(ble_ota_key_name "RSA-3072")
        set(ble_ota_keygen "npx esp32-ble-ota keygen --out ${CONFIG_SECURE_BOOT_SIGNING_KEY} "
                           "(or espsecure.py generate_signing_key --version 2 ${CONFIG_SECURE_BOOT_SIGNING_KEY})")
    endif()
    string(CONCAT ble_ota_keygen ${ble_ota_keygen})
    if(NOT EXISTS "${ble_ota_signing_key}")
        message(FATAL_ERROR
            "No signing key at ${ble_ota_signing_key}. Every image this firmware takes over the air "
            "must be signed with it (${ble_ota_key_name} for this chip). Make one on the machine that "
            "builds your images (it never needs to be on the Node-RED machine): ${ble_ota_keygen}, "
            "and keep it out of version control. The first image goes to the device over USB; from "
            "then on it accepts only images signed with that key (docs/SECURITY.md).")
    endif()
    # PKCS#1 and SEC1 keys (what both key generators write) name their type;
    # a PKCS#8 key ("BEGIN PRIVATE KEY") does not and is taken as it is.
    file(STRINGS "${ble_ota_signing_key}" ble_ota_key_begin REGEX "^-----BEGIN (RSA|EC) PRIVATE KEY-----" LIMIT_COUNT 1)
    if(ble_ota_key_begin MATCHES "BEGIN (RSA|EC) PRIVATE KEY" AND NOT CMAKE_MATCH_1 STREQUAL ble_ota_key_type)
        message(FATAL_ERROR
            "The signing key at ${ble_ota_signing_key} is an ${CMAKE_MATCH_1} key, but this chip verifies "
            "${ble_ota_key_name} signatures (idf.py menuconfig > Security features > App Signing "
            "Scheme): signed with it, every update would be refused. Make a key of that type: "
            "${ble_ota_keygen}.")
    endif()
endif()
