# slither_add_library(<module> <sources>...)
#
# One library per module, the same way each time: target slither_<module>,
# alias slither::<module>, public headers in <module>/include, installed into
# the slitherTargets export set with its headers. Callers add their own links.
function(slither_add_library module)
  set(target slither_${module})
  add_library(${target} ${ARGN})
  add_library(slither::${module} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${module} OUTPUT_NAME ${target})
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:slither_build_flags>)
  install(TARGETS ${target} EXPORT slitherTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
endfunction()
