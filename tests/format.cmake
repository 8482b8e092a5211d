# Checks that every C++ file of the project is formatted by the repository's .clang-format, with
# clang-format 14 (Debian 12's; other versions lay some constructs out differently). Skipped, with
# this message, where clang-format-14 is not installed: "clang-format-14 not found".
#   cmake -DSOURCE_DIR=... -P format.cmake
find_program(CLANG_FORMAT NAMES clang-format-14)
if(NOT CLANG_FORMAT)
  message(STATUS "clang-format-14 not found; format check skipped (apt-get install clang-format-14)")
  return()
endif()
set(files)
foreach(dir include examples tests benchmarks fuzz)
  file(GLOB_RECURSE found ${SOURCE_DIR}/${dir}/*.cpp ${SOURCE_DIR}/${dir}/*.hpp ${SOURCE_DIR}/${dir}/*.h)
  list(APPEND files ${found})
endforeach()
list(LENGTH files count)
execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${files} RESULT_VARIABLE status ERROR_VARIABLE errors)
if(NOT status EQUAL 0)
  string(REGEX MATCHALL "[^\n]+\\.(cpp|hpp|h):[0-9]+:[0-9]+: error" unformatted "${errors}")
  list(TRANSFORM unformatted REPLACE ":[0-9]+:[0-9]+: error$" "")
  list(REMOVE_DUPLICATES unformatted)
  string(REPLACE ";" "\n  " unformatted "${unformatted}")
  message(FATAL_ERROR "Not formatted by .clang-format (run clang-format-14 -i on them):\n${unformatted}")
endif()
message(STATUS "${count} C++ files formatted by .clang-format")
