# cmake -DNM=<nm> -DLIBS=<lib.so>=<regex>,... -P check_exported_symbols.cmake
#
# A shared library exports its public API and nothing of its internals: no
# dynamic symbol it defines may name one of Slither's detail:: namespaces
# (slither::detail, slither::shm::detail...), as its own namespace or in a
# parameter or template argument. (Weak instantiations of the standard
# library's and Boost's templates, whose own detail namespaces show, are
# theirs.) Each library must
# also export a symbol matching its regex, so that a library that exports
# nothing (or an nm that lists nothing) does not pass.
cmake_minimum_required(VERSION 3.25)
string(REPLACE "," ";" libs "${LIBS}")
set(failures "")
foreach(entry IN LISTS libs)
  string(FIND "${entry}" "=" eq)
  string(SUBSTRING "${entry}" 0 ${eq} lib)
  math(EXPR after "${eq} + 1")
  string(SUBSTRING "${entry}" ${after} -1 expected)
  execute_process(COMMAND "${NM}" -D --defined-only -C "${lib}" OUTPUT_VARIABLE symbols
                  RESULT_VARIABLE status COMMAND_ECHO NONE)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "${NM} failed on ${lib}")
  endif()
  string(REPLACE "\n" ";" lines "${symbols}")
  list(LENGTH lines count)
  list(FILTER lines INCLUDE REGEX "slither::([a-z_]+::)*detail::")
  if(lines)
    list(LENGTH lines leaked)
    list(SUBLIST lines 0 10 shown)
    list(JOIN shown "\n  " shown)
    list(APPEND failures "${lib} exports ${leaked} symbol(s) of slither's detail::, e.g.\n  ${shown}")
  else()
    message(STATUS "${lib}: ${count} dynamic symbols, none of slither's detail::")
  endif()
  if(NOT symbols MATCHES "${expected}")
    list(APPEND failures "${lib} does not export ${expected}")
  endif()
endforeach()
if(failures)
  list(JOIN failures "\n" failures)
  message(FATAL_ERROR "${failures}")
endif()
