# cmake -DSOURCE_DIR=<slither tree> -P check_public_headers.cmake
#
# The installed package exports no private dependency: its public headers must
# not include one (cppzmq, spdlog, toml++, cereal, nlohmann_json, Boost,
# xxhash), or consumers would need it, found or not.
file(GLOB include_dirs LIST_DIRECTORIES true "${SOURCE_DIR}/*/include")
set(headers "")
foreach(dir IN LISTS include_dirs)
  file(GLOB_RECURSE found "${dir}/*.hpp")
  list(APPEND headers ${found})
endforeach()
if(NOT headers)
  message(FATAL_ERROR "no public headers in ${SOURCE_DIR}/<module>/include")
endif()
set(offending "")
foreach(header IN LISTS headers)
  file(STRINGS "${header}" includes
       REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"](zmq|zmq_addon|xxhash)\\.h|^[ \t]*#[ \t]*include[ \t]*[<\"](spdlog|toml\\+\\+|cereal|nlohmann|boost|fmt)/")
  foreach(line IN LISTS includes)
    file(RELATIVE_PATH name "${SOURCE_DIR}" "${header}")
    list(APPEND offending "${name}: ${line}")
  endforeach()
endforeach()
if(offending)
  list(JOIN offending "\n  " offending)
  message(FATAL_ERROR "public headers include private dependencies:\n  ${offending}")
endif()
list(LENGTH headers count)
message(STATUS "${count} public headers include no private dependency")
