# Every external dependency clipper uses; versions and origins in third_party/README.md.

# --- LibTorch, from the PyPI torch wheel installed in .venv by scripts/setup.sh ---------------
if(NOT Torch_DIR)
  file(GLOB _clipper_torch_dirs
       "${CMAKE_SOURCE_DIR}/.venv/lib/python3*/site-packages/torch/share/cmake/Torch")
  if(_clipper_torch_dirs)
    list(GET _clipper_torch_dirs 0 _clipper_torch_dir)
    set(Torch_DIR "${_clipper_torch_dir}" CACHE PATH "LibTorch CMake folder")
  else()
    find_package(Python3 COMPONENTS Interpreter)
    if(Python3_FOUND)
      execute_process(COMMAND ${Python3_EXECUTABLE} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                      OUTPUT_VARIABLE _clipper_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
      if(_clipper_torch_prefix)
        set(Torch_DIR "${_clipper_torch_prefix}/Torch" CACHE PATH "LibTorch CMake folder")
      endif()
    endif()
  endif()
endif()
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST} AND NOT TORCH_CUDA_ARCH_LIST)
  set(TORCH_CUDA_ARCH_LIST "9.0") # Hopper (H100/H200), the GPU this project is measured on
endif()
find_package(Torch REQUIRED)

# The Python of the venv that holds the torch wheel: it runs the interop tests (open_clip,
# webdataset, safetensors, tensorboard) and torchrun.
if(NOT CLIPPER_PYTHON)
  string(REGEX REPLACE "/lib/python3[^/]*/site-packages/torch/share/cmake/Torch/?$" "/bin/python"
         _clipper_py "${Torch_DIR}")
  if(EXISTS "${_clipper_py}")
    set(CLIPPER_PYTHON "${_clipper_py}" CACHE FILEPATH "Python with torch and the test clients")
  else()
    find_program(CLIPPER_PYTHON python3)
  endif()
endif()
# Torch's config adds its include folder, which bundles fmt 12. Only targets that link Torch see it;
# spdlog (built on Debian's fmt 9) is linked privately by clipper_core alone, which never includes
# Torch, so the two fmt copies can never meet in one translation unit (see src/core/log.cpp).

# --- Debian packages --------------------------------------------------------------------------
find_package(spdlog REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(CLI11 REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(Threads REQUIRED)
if(CLIPPER_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()

if(CLIPPER_WITH_DATA)
  # Debian's per-module OpenCV packages (libopencv-{core,imgproc,imgcodecs}-dev) ship no CMake
  # package file; the imported target clipper::opencv is made from the headers and libraries.
  find_path(CLIPPER_OPENCV_INCLUDE opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
  add_library(clipper_opencv INTERFACE IMPORTED)
  target_include_directories(clipper_opencv INTERFACE ${CLIPPER_OPENCV_INCLUDE})
  foreach(_m core imgproc imgcodecs)
    find_library(CLIPPER_OPENCV_${_m} opencv_${_m} REQUIRED)
    target_link_libraries(clipper_opencv INTERFACE ${CLIPPER_OPENCV_${_m}})
  endforeach()
  find_package(PkgConfig REQUIRED)
  pkg_check_modules(TURBOJPEG REQUIRED IMPORTED_TARGET libturbojpeg)
  pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
  find_package(LibArchive REQUIRED)
  find_package(ICU REQUIRED COMPONENTS uc i18n)
endif()
