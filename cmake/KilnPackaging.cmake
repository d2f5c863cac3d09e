# Debian 12 packages with CPack: `cmake --build B --target package` writes kiln, kiln-service and
# kiln-board-emu .deb files (plus a -dbgsym .ddeb each, holding the debug symbols stripped from the
# binaries) into B. Dependencies come from dpkg-shlibdeps; libcurl4 is named by hand because kiln and
# the board emulator's agent dlopen it. scripts/package-check.sh builds, lints and runs them.
include(GNUInstallDirs)

set(KILN_PACKAGE_MAINTAINER "kiln maintainers <maintainers@users.noreply.r-seed-771224a8.example>"
    CACHE STRING "Maintainer field of the Debian packages and their changelog")
set(KILN_PACKAGE_RELEASE 1 CACHE STRING "Debian revision of the packages (VERSION-REVISION)")
set(package_dir "${PROJECT_BINARY_DIR}/package-files")

# The changelog names the commit it was built from; its date is that commit's, so two builds of one commit
# make the same file.
set(changelog_date "")
if(GIT_FOUND AND EXISTS "${PROJECT_SOURCE_DIR}/.git")
  execute_process(COMMAND "${GIT_EXECUTABLE}" log -1 --format=%aD WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}"
                  OUTPUT_VARIABLE changelog_date OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
if(NOT changelog_date)
  string(TIMESTAMP changelog_date "%a, %d %b %Y %H:%M:%S +0000" UTC)
endif()
foreach(package kiln kiln-service kiln-board-emu)
  file(WRITE "${package_dir}/${package}/changelog.Debian"
       "${package} (${KILN_VERSION}-${KILN_PACKAGE_RELEASE}) unstable; urgency=medium\n\n"
       "  * Built from kiln ${KILN_VERSION} (git describe of the source tree).\n\n"
       " -- ${KILN_PACKAGE_MAINTAINER}  ${changelog_date}\n")
endforeach()

# Compressed at build time (Debian policy: gzip -9n, no name or time stamp in the header).
set(package_outputs "")
function(kiln_gzip source output)
  add_custom_command(OUTPUT "${output}" COMMAND gzip -9nc "${source}" > "${output}" DEPENDS "${source}" VERBATIM)
  set(package_outputs ${package_outputs} "${output}" PARENT_SCOPE)
endfunction()
foreach(package kiln kiln-service kiln-board-emu)
  kiln_gzip("${package_dir}/${package}/changelog.Debian" "${package_dir}/${package}/changelog.Debian.gz")
  install(FILES "${package_dir}/${package}/changelog.Debian.gz" "${PROJECT_SOURCE_DIR}/packaging/copyright"
          DESTINATION "${CMAKE_INSTALL_DATADIR}/doc/${package}" COMPONENT ${package})
endforeach()
file(GLOB man_sources CONFIGURE_DEPENDS "${PROJECT_SOURCE_DIR}/man/*.[18]")
foreach(page ${man_sources})
  get_filename_component(name "${page}" NAME)
  string(REGEX REPLACE ".*\\.([18])$" "\\1" section "${name}")
  if(name MATCHES "^kiln-service\\.")
    set(component kiln-service)
  elseif(name MATCHES "^kiln-board-emu\\.")
    set(component kiln-board-emu)
  else()
    set(component kiln)
  endif()
  kiln_gzip("${page}" "${package_dir}/man/${name}.gz")
  install(FILES "${package_dir}/man/${name}.gz" DESTINATION "${CMAKE_INSTALL_MANDIR}/man${section}" COMPONENT ${component})
endforeach()
add_custom_target(kiln_package_files ALL DEPENDS ${package_outputs})

install(TARGETS kiln RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT kiln)
install(FILES "${PROJECT_SOURCE_DIR}/completions/kiln.bash" DESTINATION "${CMAKE_INSTALL_DATADIR}/bash-completion/completions"
        RENAME kiln COMPONENT kiln)
install(FILES "${PROJECT_SOURCE_DIR}/completions/_kiln" DESTINATION "${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions"
        COMPONENT kiln)
install(FILES "${PROJECT_SOURCE_DIR}/completions/kiln.fish" DESTINATION "${CMAKE_INSTALL_DATADIR}/fish/vendor_completions.d"
        COMPONENT kiln)
if(TARGET kiln-service)
  install(TARGETS kiln-service RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT kiln-service)
  # Debian 12 keeps packaged units in /lib/systemd/system and configuration in /etc, whatever the prefix.
  install(FILES "${PROJECT_SOURCE_DIR}/packaging/kiln-service.service" DESTINATION /lib/systemd/system
          COMPONENT kiln-service)
  install(FILES "${PROJECT_SOURCE_DIR}/packaging/config.toml" DESTINATION /etc/kiln-service COMPONENT kiln-service)
endif()
install(TARGETS kiln-board-emu RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT kiln-board-emu)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kiln)
set(CPACK_PACKAGE_VENDOR "the kiln authors")
set(CPACK_PACKAGE_VERSION "${KILN_VERSION}")
set(CPACK_PACKAGE_CONTACT "${KILN_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL kiln kiln-board-emu)
if(TARGET kiln-service)
  list(APPEND CPACK_COMPONENTS_ALL kiln-service)
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE "${KILN_PACKAGE_RELEASE}")
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${KILN_PACKAGE_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_DEBUGINFO_PACKAGE ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_KILN_PACKAGE_NAME kiln)
set(CPACK_DEBIAN_KILN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_KILN_PACKAGE_DEPENDS "libcurl4, tzdata")
set(CPACK_COMPONENT_KILN_DESCRIPTION
    "toolchain for secured microcontroller products\n"
    "kiln signs firmware as MCUboot images (imgtool-compatible), describes updates as SUIT\n"
    "manifests signed with COSE, provisions boards at the factory over MCUmgr SMP, and claims,\n"
    "deploys and queries devices on a kiln-service over HTTPS.")
set(CPACK_DEBIAN_KILN-SERVICE_PACKAGE_NAME kiln-service)
set(CPACK_DEBIAN_KILN-SERVICE_PACKAGE_SECTION net)
# Maintenance windows read the system time-zone database (date/tz.h, libdate-tz3 found by shlibdeps).
set(CPACK_DEBIAN_KILN-SERVICE_PACKAGE_DEPENDS "tzdata")
set(CPACK_DEBIAN_KILN-SERVICE_PACKAGE_CONTROL_EXTRA "${PROJECT_SOURCE_DIR}/packaging/conffiles")
set(CPACK_COMPONENT_KILN-SERVICE_DESCRIPTION
    "reference kiln security service (HTTPS JSON API)\n"
    "kiln-service keeps products, devices, images and staged deployments for kiln, serves the\n"
    "update agents of devices over mutual TLS, and runs as a systemd service (kiln-service.service)\n"
    "configured in /etc/kiln-service/config.toml.")
set(CPACK_DEBIAN_KILN-BOARD-EMU_PACKAGE_NAME kiln-board-emu)
set(CPACK_DEBIAN_KILN-BOARD-EMU_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_KILN-BOARD-EMU_PACKAGE_DEPENDS "libcurl4")
set(CPACK_COMPONENT_KILN-BOARD-EMU_DESCRIPTION
    "virtual secured microcontroller boards for kiln\n"
    "kiln-board-emu emulates boards with a software secure element, flash slots, manufacturing\n"
    "states and an update agent, for tests, demos and factory-line rehearsal without hardware.")
include(CPack)
