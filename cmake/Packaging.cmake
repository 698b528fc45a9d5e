# What `cmake --install` and the Debian package put where, besides the two executables (their
# install() rules sit with their targets in daemon/ and clients/cpp/). scripts/package configures a
# build with the install prefix /usr and the installed catalog directory, and runs cpack.
#
#   /usr/bin/telemetryd, /usr/bin/telemetry-send
#   /etc/telemetryd/telemetryd.yaml              the default config (a conffile)
#   /usr/share/telemetryd/catalogs/*.yaml        the built-in catalogs
#   /lib/systemd/system/telemetryd.service       the unit
#   /usr/lib/sysctl.d/60-telemetryd.conf         net.core.rmem_max for the UDP receive buffers
#   /usr/share/man/man8/telemetryd.8.gz, /usr/share/man/man1/telemetry-send.1.gz

set(TELEMETRYD_SYSTEMD_UNIT_DIR "/lib/systemd/system" CACHE PATH "Where the systemd unit is installed")
set(TELEMETRYD_INSTALLED_CATALOG_DIR "${CMAKE_INSTALL_FULL_DATADIR}/telemetryd/catalogs")

install(FILES ${PROJECT_SOURCE_DIR}/config/telemetryd.yaml
        DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR}/telemetryd)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/config/catalogs/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/telemetryd/catalogs
        FILES_MATCHING PATTERN "*.yaml")
install(FILES ${PROJECT_SOURCE_DIR}/packaging/telemetryd.service
        DESTINATION ${TELEMETRYD_SYSTEMD_UNIT_DIR})
install(FILES ${PROJECT_SOURCE_DIR}/packaging/60-telemetryd.conf DESTINATION lib/sysctl.d)

# Man pages, compressed as Debian wants them (gzip -9n: no name or time stamp in the header).
find_program(TELEMETRYD_GZIP gzip REQUIRED)
set(man_pages telemetryd.8 telemetry-send.1)
set(man_outputs)
foreach(page IN LISTS man_pages)
  set(out ${CMAKE_BINARY_DIR}/man/${page}.gz)
  add_custom_command(
    OUTPUT ${out}
    COMMAND ${CMAKE_COMMAND} -E copy ${PROJECT_SOURCE_DIR}/docs/man/${page}
            ${CMAKE_BINARY_DIR}/man/${page}
    COMMAND ${TELEMETRYD_GZIP} -9nf ${CMAKE_BINARY_DIR}/man/${page}
    DEPENDS ${PROJECT_SOURCE_DIR}/docs/man/${page}
    COMMENT "Compressing man page ${page}"
    VERBATIM)
  string(REGEX REPLACE "^.*\\.([0-9])$" "\\1" section ${page})
  install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  list(APPEND man_outputs ${out})
endforeach()
add_custom_target(man_pages ALL DEPENDS ${man_outputs})

# The Debian package.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME telemetryd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "telemetry collector: :telemetry events and StatsD to Prometheus")
# The long description, wrapped as dpkg shows it (cpack indents each line).
string(CONCAT CPACK_DEBIAN_PACKAGE_DESCRIPTION
  "telemetryd receives telemetry events from applications over UDP or TCP,\n"
  "in a compact binary wire format or as StatsD/DogStatsD lines. It aggregates\n"
  "them into counters, sums, last values, histograms and summaries as YAML\n"
  "catalogs describe, serves them to Prometheus and pushes them to StatsD\n"
  "servers. Every rejected or dropped input is counted in its own metrics.\n"
  "\n"
  "This package has the daemon with its systemd unit, the built-in catalogs\n"
  "and telemetry-send, a command-line client.")
set(TELEMETRYD_PACKAGE_MAINTAINER "telemetryd maintainers <maintainers@telemetryd.invalid>"
    CACHE STRING "Maintainer field of the Debian package")
set(CPACK_PACKAGE_CONTACT "${TELEMETRYD_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends: the shared libraries the executables link, as dpkg-shlibdeps finds them.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
    ${PROJECT_SOURCE_DIR}/packaging/debian/prerm ${PROJECT_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# A package whose daemon looks for its catalogs in the build's source tree, or its config outside
# /etc, would install and then fail at start: cpack refuses to make one (cmake/PackagingCheck.cmake).
set(CPACK_TELEMETRYD_INSTALL_PREFIX "${CMAKE_INSTALL_PREFIX}")
set(CPACK_TELEMETRYD_BUILTIN_CATALOG_DIR "${TELEMETRYD_BUILTIN_CATALOG_DIR}")
set(CPACK_TELEMETRYD_INSTALLED_CATALOG_DIR "${TELEMETRYD_INSTALLED_CATALOG_DIR}")
set(CPACK_PROJECT_CONFIG_FILE ${PROJECT_SOURCE_DIR}/cmake/PackagingCheck.cmake)
include(CPack)
