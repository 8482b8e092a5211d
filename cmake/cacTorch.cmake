# What a LibTorch asks of the code that includes its headers, applied to its imported `torch`
# target. Included right after find_package(Torch) by cac's own build and by the installed
# cacConfig.cmake, so that cac and every consumer of cac::cac compile the same way.
#
# - C++20 from LibTorch 2.13 on: ATen's headers stop with #error below it. Older LibTorch builds
#   (Debian's 1.13.1, 2.0-2.12) need C++17, which cac::cac itself requires.
if(TARGET torch AND DEFINED Torch_VERSION AND Torch_VERSION VERSION_GREATER_EQUAL 2.13)
  get_target_property(_cac_torch_features torch INTERFACE_COMPILE_FEATURES)
  if(NOT _cac_torch_features OR NOT "cxx_std_20" IN_LIST _cac_torch_features)
    set_property(TARGET torch APPEND PROPERTY INTERFACE_COMPILE_FEATURES cxx_std_20)
  endif()
  unset(_cac_torch_features)
endif()
