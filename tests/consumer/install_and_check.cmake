# cmake -DBUILD_DIR=<build tree> -DPREFIX=<dir> [-DEXPECT=a,b] [-DEXPECT_ONLY=a,b] -P install_and_check.cmake
#
# Installs a build tree into an emptied prefix (so that no file left by an
# earlier run can stand in for a missing one), then checks what is there:
# EXPECT lists files that must exist, EXPECT_ONLY the complete list of files
# (paths relative to PREFIX, comma-separated).
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}"
                COMMAND_ERROR_IS_FATAL ANY)

if(DEFINED EXPECT_ONLY)
  string(REPLACE "," ";" expected "${EXPECT_ONLY}")
  file(GLOB_RECURSE installed LIST_DIRECTORIES false RELATIVE "${PREFIX}" "${PREFIX}/*")
  list(SORT installed)
  list(SORT expected)
  if(NOT installed STREQUAL expected)
    message(FATAL_ERROR "installed: '${installed}'; expected exactly: '${expected}'")
  endif()
endif()
string(REPLACE "," ";" expected "${EXPECT}")
foreach(file IN LISTS expected)
  if(NOT EXISTS "${PREFIX}/${file}")
    message(FATAL_ERROR "not installed: ${file}")
  endif()
endforeach()
message(STATUS "installed as expected into ${PREFIX}")
