# clipper_add_part(<part> SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...] [TORCH])
# One shared library per part: clipper_<part>, alias clipper::<part>.
# TORCH: links LibTorch publicly and reuses the precompiled LibTorch headers.
function(clipper_add_part part)
  cmake_parse_arguments(ARG "TORCH" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  set(target clipper_${part})
  add_library(${target} ${ARG_SOURCES})
  add_library(clipper::${part} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${part} DEFINE_SYMBOL "")
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  target_link_libraries(${target} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  if(ARG_TORCH)
    target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
    clipper_use_torch_pch(${target})
  endif()
  set_property(GLOBAL APPEND PROPERTY CLIPPER_PARTS ${target})
endfunction()

# The LibTorch headers are precompiled once (target clipper_pch) and reused by every target that
# includes them: this saves 10-20 s per translation unit on a 2-core machine.
function(clipper_use_torch_pch target)
  if(NOT CLIPPER_USE_PCH)
    return()
  endif()
  # Libraries are compiled with -fPIC, executables with the compiler's default (PIE): a PCH only
  # serves one of the two, so there is one of each.
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    set(pch clipper_pch_exe)
    set(pic OFF)
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
  else()
    set(pch clipper_pch)
    set(pic ON)
  endif()
  if(NOT TARGET ${pch})
    add_library(${pch} OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch_stub.cpp)
    set_target_properties(${pch} PROPERTIES DEFINE_SYMBOL "" POSITION_INDEPENDENT_CODE ${pic})
    target_link_libraries(${pch} PUBLIC ${TORCH_LIBRARIES})
    target_precompile_headers(${pch} PUBLIC
      <ATen/ATen.h> <torch/nn.h> <torch/autograd.h> <torch/types.h>
      <string> <vector> <memory> <map> <unordered_map> <functional> <sstream>)
  endif()
  target_precompile_headers(${target} REUSE_FROM ${pch})
endfunction()

# clipper_add_test(<name> LABELS ... SOURCES ... DEPS ... [TORCH])
# TORCH: the test includes LibTorch headers and reuses the precompiled ones.
function(clipper_add_test name)
  cmake_parse_arguments(ARG "TORCH" "" "LABELS;SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests ${PROJECT_SOURCE_DIR}/include)
  if(ARG_TORCH)
    target_link_libraries(${name} PRIVATE ${TORCH_LIBRARIES})
    clipper_use_torch_pch(${name})
  endif()
  target_compile_definitions(${name} PRIVATE
    CLIPPER_SOURCE_DIR="${PROJECT_SOURCE_DIR}" CLIPPER_BINARY_DIR="${PROJECT_BINARY_DIR}"
    CLIPPER_DEFAULT_BIN="$<TARGET_FILE:clipper>" CLIPPER_DEFAULT_PYTHON="${CLIPPER_PYTHON}")
  gtest_discover_tests(${name} DISCOVERY_MODE PRE_TEST DISCOVERY_TIMEOUT 60 TEST_LIST ${name}_TESTS)
  # Labels are set after discovery by a ctest include file of our own: a list value does not
  # survive gtest_discover_tests' PROPERTIES.
  # Every test may hand its Python scripts to the fork server (tests/pyserver/, started once per
  # ctest run by the fixture clipper_python); the interop and e2e ones wait for it to be up.
  set(label_file ${CMAKE_CURRENT_BINARY_DIR}/${name}_labels.cmake)
  # OpenMP threads that sleep when idle: two tests at once on 2 cores with spinning threads each
  # ran up to 3x slower (TrainE2E.TinyCoca 64 s -> 28 s, WeightEma 5.6 s -> 1.9 s at ctest -j2).
  set(py_env "PYTHONPATH=path_list_prepend:${PROJECT_SOURCE_DIR}/tests/pyserver;CLIPPER_PY_SERVER=set:${CLIPPER_PY_SERVER_SOCKET};OMP_WAIT_POLICY=set:PASSIVE")
  set(py_fixture "")
  if("interop" IN_LIST ARG_LABELS OR "e2e" IN_LIST ARG_LABELS)
    set(py_fixture " FIXTURES_REQUIRED clipper_python")
  endif()
  file(WRITE ${label_file}
       "foreach(t IN LISTS ${name}_TESTS)\n  set_tests_properties(\"\${t}\" PROPERTIES LABELS \"${ARG_LABELS}\" ENVIRONMENT_MODIFICATION \"${py_env}\"${py_fixture})\nendforeach()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${label_file})
endfunction()
