# Read by cpack (CPACK_PROJECT_CONFIG_FILE): refuses to package a build whose daemon would look for
# its files elsewhere than where the package puts them. scripts/package configures a build that passes.
if(NOT CPACK_TELEMETRYD_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "this build installs into ${CPACK_TELEMETRYD_INSTALL_PREFIX}; a package needs "
                      "-DCMAKE_INSTALL_PREFIX=/usr (scripts/package sets it)")
endif()
if(NOT CPACK_TELEMETRYD_BUILTIN_CATALOG_DIR STREQUAL CPACK_TELEMETRYD_INSTALLED_CATALOG_DIR)
  message(FATAL_ERROR
    "this build's daemon reads the built-in catalogs from ${CPACK_TELEMETRYD_BUILTIN_CATALOG_DIR}, "
    "the package installs them in ${CPACK_TELEMETRYD_INSTALLED_CATALOG_DIR}: configure with "
    "-DTELEMETRYD_BUILTIN_CATALOG_DIR=${CPACK_TELEMETRYD_INSTALLED_CATALOG_DIR} (scripts/package does)")
endif()
