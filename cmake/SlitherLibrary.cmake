include(CMakePackageConfigHelpers)
include(GenerateExportHeader)

# The installed libraries share one compatibility promise with the package
# version file (SameMinorVersion): 0.1.x releases are interchangeable.
set(SLITHER_SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
set(SLITHER_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/slither)

# slither_add_library(<module> <sources>...)
#
# One library per module, the same way each time: target slither_<module>,
# alias slither::<module>, public headers in <module>/include, C++20 required
# of every consumer, and (with SLITHER_INSTALL) installed with its headers into
# its own export set, so that the package can load one component at a time.
#
# Symbols are hidden unless a public header marks them SLITHER_<MODULE>_EXPORT
# (from the generated slither/<module>/export.hpp): a shared library exports
# its API and nothing of its internals (detail::, the private headers), so
# those can change without breaking binaries built against it. Static builds
# define SLITHER_<MODULE>_STATIC_DEFINE, which empties the macro: a program or
# Python extension linking them exports none of Slither's symbols.
# Callers add their own links: PUBLIC only for what the public headers need,
# header-only private dependencies through $<BUILD_INTERFACE:...>.
function(slither_add_library module)
  set(target slither_${module})
  add_library(${target} ${ARGN})
  add_library(slither::${module} ALIAS ${target})
  set_target_properties(${target} PROPERTIES
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON
    EXPORT_NAME ${module}
    OUTPUT_NAME ${target}
    VERSION ${PROJECT_VERSION}
    SOVERSION ${SLITHER_SOVERSION}
    # Shared builds: a library finds its sibling libraries where it was installed.
    INSTALL_RPATH "$ORIGIN")
  # The public headers use std::span and designated initializers: a consumer on
  # a compiler whose default is older (GCC 12: gnu++17) must still get C++20.
  target_compile_features(${target} PUBLIC cxx_std_20)
  # A clean build compiles each batch of 8 sources as one unit, parsing the
  # headers they share (Asio, spdlog, cereal...) once: CI's sanitizer builds
  # use it. The sources must stay unity-safe: no two of a module may define
  # the same name in an anonymous namespace.
  if(SLITHER_UNITY_BUILD)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_BATCH_SIZE 8)
    # GCC warns of a class whose member's type is in an anonymous namespace
    # unless the class is defined in the main file; in a batch, no source is
    # the main file (shm's trimmer::state). A source compiled alone, as in
    # every build without this option, still gets the warning.
    target_compile_options(${target} PRIVATE $<$<CXX_COMPILER_ID:GNU>:-Wno-subobject-linkage>)
  endif()
  string(TOUPPER "${target}" macro_base)
  set(export_header ${CMAKE_CURRENT_BINARY_DIR}/include/slither/${module}/export.hpp)
  generate_export_header(${target} BASE_NAME ${macro_base} EXPORT_FILE_NAME ${export_header})
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "STATIC_LIBRARY")
    target_compile_definitions(${target} PUBLIC ${macro_base}_STATIC_DEFINE)
  endif()
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<BUILD_INTERFACE:${CMAKE_CURRENT_BINARY_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:slither_build_flags>)
  if(SLITHER_INSTALL)
    install(TARGETS ${target} EXPORT slither_${module}
            ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
    install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
    install(FILES ${export_header} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/slither/${module})
    install(EXPORT slither_${module} NAMESPACE slither:: FILE slither-${module}-targets.cmake
            DESTINATION ${SLITHER_CMAKE_INSTALL_DIR})
  endif()
endfunction()

# slither_install_program(<target>)
#
# Installs an executable into bindir (with SLITHER_INSTALL). In shared builds
# it finds the installed libraries relative to itself, with no LD_LIBRARY_PATH.
function(slither_install_program target)
  if(NOT SLITHER_INSTALL)
    return()
  endif()
  if(BUILD_SHARED_LIBS)
    file(RELATIVE_PATH bin_to_lib ${CMAKE_INSTALL_FULL_BINDIR} ${CMAKE_INSTALL_FULL_LIBDIR})
    set_target_properties(${target} PROPERTIES INSTALL_RPATH "$ORIGIN/${bin_to_lib}")
  endif()
  install(TARGETS ${target} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()

# slither_install_package()
#
# The package config for find_package(slither [COMPONENTS core shm broker]).
# Static libraries bring their private link dependencies with them, so the
# config must find those too (each component only its own); shared ones do not.
function(slither_install_package)
  if(BUILD_SHARED_LIBS)
    set(SLITHER_STATIC_LIBS OFF)
  else()
    set(SLITHER_STATIC_LIBS ON)
  endif()
  configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/slitherConfig.cmake.in
                                ${PROJECT_BINARY_DIR}/slitherConfig.cmake
                                INSTALL_DESTINATION ${SLITHER_CMAKE_INSTALL_DIR}
                                NO_SET_AND_CHECK_MACRO NO_CHECK_REQUIRED_COMPONENTS_MACRO)
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/slitherConfigVersion.cmake
                                   COMPATIBILITY SameMinorVersion)
  install(FILES ${PROJECT_BINARY_DIR}/slitherConfig.cmake
                ${PROJECT_BINARY_DIR}/slitherConfigVersion.cmake
          DESTINATION ${SLITHER_CMAKE_INSTALL_DIR})
endfunction()
