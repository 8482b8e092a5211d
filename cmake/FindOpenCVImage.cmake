# Finds the parts of OpenCV the examples use (core, imgproc, imgcodecs) from Debian's
# libopencv-{core,imgproc,imgcodecs}-dev, which ship no CMake package of their own (only the
# full libopencv-dev does), and defines the imported target cac::opencv.
#   OpenCVImage_FOUND, cac::opencv
find_path(OpenCVImage_INCLUDE_DIR opencv2/imgcodecs.hpp PATH_SUFFIXES opencv4)
find_library(OpenCVImage_CORE_LIBRARY opencv_core)
find_library(OpenCVImage_IMGPROC_LIBRARY opencv_imgproc)
find_library(OpenCVImage_IMGCODECS_LIBRARY opencv_imgcodecs)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(OpenCVImage REQUIRED_VARS OpenCVImage_INCLUDE_DIR OpenCVImage_CORE_LIBRARY
                                  OpenCVImage_IMGPROC_LIBRARY OpenCVImage_IMGCODECS_LIBRARY)
if(OpenCVImage_FOUND AND NOT TARGET cac::opencv)
  add_library(cac::opencv INTERFACE IMPORTED)
  set_target_properties(cac::opencv PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${OpenCVImage_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "${OpenCVImage_IMGCODECS_LIBRARY};${OpenCVImage_IMGPROC_LIBRARY};${OpenCVImage_CORE_LIBRARY}")
endif()
mark_as_advanced(OpenCVImage_INCLUDE_DIR OpenCVImage_CORE_LIBRARY OpenCVImage_IMGPROC_LIBRARY
                 OpenCVImage_IMGCODECS_LIBRARY)
