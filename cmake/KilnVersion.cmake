# One version for the whole build: `git describe --tags --always --dirty` when configured in a git
# checkout, else the project() version. Written to <build>/generated/kiln/version.hpp (KILN_VERSION,
# KILN_RELEASE) and used by the three programs, the service's /v1/version, the agent and the packages.
# The string is a valid Debian upstream version (digits first; only [0-9A-Za-z.+~]):
#   tag v1.2.3 -> 1.2.3   v1.2.3-4-gabc1234 -> 1.2.3+4.gabc1234   no tag -> 0.1.0+git.abc1234   .dirty appended
set(KILN_RELEASE "${PROJECT_VERSION}")
set(KILN_VERSION "${PROJECT_VERSION}")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS "${PROJECT_SOURCE_DIR}/.git")
  execute_process(COMMAND "${GIT_EXECUTABLE}" describe --tags --always --long --dirty --abbrev=7
                  WORKING_DIRECTORY "${PROJECT_SOURCE_DIR}" OUTPUT_VARIABLE described RESULT_VARIABLE described_rc
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(described_rc EQUAL 0 AND described)
    set(dirty "")
    if(described MATCHES "-dirty$")
      set(dirty ".dirty")
      string(REGEX REPLACE "-dirty$" "" described "${described}")
    endif()
    # --long: a tag always comes as TAG-N-gHASH, so a bare hash (no tag yet) cannot pass for a tag even
    # when it starts with a digit.
    if(described MATCHES "^v?([0-9][0-9A-Za-z.]*)-0-g[0-9a-f]+$")
      set(KILN_VERSION "${CMAKE_MATCH_1}${dirty}")
    elseif(described MATCHES "^v?([0-9][0-9A-Za-z.]*)-([0-9]+)-g([0-9a-f]+)$")
      set(KILN_VERSION "${CMAKE_MATCH_1}+${CMAKE_MATCH_2}.g${CMAKE_MATCH_3}${dirty}")
    elseif(described MATCHES "^[0-9a-f]+$")
      set(KILN_VERSION "${PROJECT_VERSION}+git.${described}${dirty}")
    endif()
  endif()
endif()
message(STATUS "kiln version ${KILN_VERSION}")
configure_file("${CMAKE_CURRENT_LIST_DIR}/version.hpp.in" "${PROJECT_BINARY_DIR}/generated/kiln/version.hpp" @ONLY)
add_library(kiln_version INTERFACE)
target_include_directories(kiln_version INTERFACE "${PROJECT_BINARY_DIR}/generated")
