# Included by the subdirectory and fetchcontent consumers right after they add
# slither: as a subproject it must leave the parent's build alone.
if(NOT "${CMAKE_BUILD_TYPE}" STREQUAL "${build_type_before}"
   OR NOT "$CACHE{CMAKE_BUILD_TYPE}" STREQUAL "${build_type_before}")
  message(FATAL_ERROR "adding slither changed CMAKE_BUILD_TYPE from '${build_type_before}' "
                      "to '${CMAKE_BUILD_TYPE}' (cache: '$CACHE{CMAKE_BUILD_TYPE}')")
endif()
foreach(target slither-broker slither-example core_unit_tests)
  if(TARGET ${target})
    message(FATAL_ERROR "slither as a subproject defined ${target}")
  endif()
endforeach()
foreach(target slither::core slither::shm slither::broker)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "slither as a subproject did not define ${target}")
  endif()
endforeach()
