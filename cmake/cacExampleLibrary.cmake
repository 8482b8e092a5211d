# cac_example_library(<target> [LIBRARIES <dependency>...] [NO_TORCH])
#
# The static library of one folder of examples/ (io, models, data, eval, engine), built from every
# .cpp in it and linked PUBLIC to LIBRARIES. Its headers are reachable as <folder>/<header>.hpp
# (e.g. "eval/metrics.hpp") only by targets that link it: its include directory holds a single
# link to its own folder, so an undeclared dependency between folders is a compile error, not a
# silent include. Torch TUs get <torch/torch.h> precompiled unless NO_TORCH.
function(cac_example_library target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "NO_TORCH" "" "LIBRARIES")
  get_filename_component(folder ${CMAKE_CURRENT_SOURCE_DIR} NAME)
  file(GLOB_RECURSE sources CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cpp)
  add_library(${target} STATIC ${sources})
  set(root ${CMAKE_BINARY_DIR}/example_includes/${folder})
  file(MAKE_DIRECTORY ${root})
  file(CREATE_LINK ${CMAKE_CURRENT_SOURCE_DIR} ${root}/${folder} SYMBOLIC)
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${root}>)
  target_link_libraries(${target} PUBLIC ${arg_LIBRARIES})
  target_compile_features(${target} PUBLIC cxx_std_17)
  if(NOT arg_NO_TORCH)
    target_precompile_headers(${target} PRIVATE <torch/torch.h>)
  endif()
endfunction()
