# `cmake --install` puts headers, libraries, the clipper executable and a CMake package in place:
#   find_package(clipper REQUIRED)   target_link_libraries(app PRIVATE clipper::clipper)
include(CMakePackageConfigHelpers)

get_property(_clipper_parts GLOBAL PROPERTY CLIPPER_PARTS)
add_library(clipper_all INTERFACE)
set_target_properties(clipper_all PROPERTIES EXPORT_NAME clipper)
target_link_libraries(clipper_all INTERFACE ${_clipper_parts})
target_link_options(clipper_all INTERFACE ${CLIPPER_STDCXX_FIRST})
add_library(clipper::clipper ALIAS clipper_all)

install(TARGETS ${_clipper_parts} clipper_all EXPORT clipperTargets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
if(TARGET clipper)
  install(TARGETS clipper RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(DIRECTORY include/clipper DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY configs DESTINATION ${CMAKE_INSTALL_DATADIR}/clipper)
install(EXPORT clipperTargets NAMESPACE clipper:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/clipper)

set(CLIPPER_TORCH_DIR "${Torch_DIR}")
configure_package_config_file(cmake/clipperConfig.cmake.in
  ${PROJECT_BINARY_DIR}/clipperConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/clipper)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/clipperConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/clipperConfig.cmake ${PROJECT_BINARY_DIR}/clipperConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/clipper)
