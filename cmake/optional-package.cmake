# bptt_find_optional(<package> <find_package arguments>...)
#
# find_package for a package the build can do without (oneDNN for a benchmark, pybind11 for the
# Python module). A package's own CMake files can end a configure outright: a FATAL_ERROR in its
# config file, or a dependency it finds REQUIRED and that is missing (Debian's oneDNN config
# requires OpenCL, which libdnnl-dev only recommends). So the package is first looked for in a
# separate CMake process, with this project's languages and search paths; only a package found
# whole there is looked for here. Afterwards <package>_FOUND says whether it was found, and when
# it was not, BPTT_OPTIONAL_REASON says why in one line: "not found", the versions found that do
# not match, or the first line of the error the package's files raised (and which file).
#
#   bptt_find_optional(dnnl 2 CONFIG)
#   if(NOT dnnl_FOUND)
#     message(STATUS "bptt_onednn: off (oneDNN 2: ${BPTT_OPTIONAL_REASON})")
#   endif()
#
# The variables that steer the search (CMAKE_PREFIX_PATH, <package>_DIR, <package>_ROOT, the
# toolchain, ...) are passed on to the probe, and so are those named in BPTT_OPTIONAL_VARIABLES
# (e.g. Python_EXECUTABLE for pybind11). The probes' build directory is kept, under
# CMakeFiles/bptt-optional, so that its compilers are detected once.
#
# bptt_check_openblas(<library> <result>), at the end, does the same for OpenBLAS, which is found
# as a library file: whether a program calling it links.
include_guard(GLOBAL)

function(_bptt_probe_optional package)
  # One probe project for every package (so that its compilers are detected once), which loads
  # the probe of the package it is run for.
  set(dir "${CMAKE_BINARY_DIR}/CMakeFiles/bptt-optional")
  get_property(languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  list(REMOVE_ITEM languages NONE)
  if(NOT languages)
    set(languages NONE)
  endif()
  list(JOIN languages " " languages)
  file(WRITE "${dir}/CMakeLists.txt" "cmake_minimum_required(VERSION ${CMAKE_VERSION})
project(bptt_optional LANGUAGES ${languages})
include(\"\${BPTT_OPTIONAL_PROBE}\")
")
  list(JOIN ARGN " " arguments)
  file(WRITE "${dir}/${package}.cmake" "find_package(${package} ${arguments} QUIET)
if(${package}_FOUND)
  message(STATUS \"bptt-optional: found\")
else()
  message(STATUS \"bptt-optional: considered [\${${package}_CONSIDERED_VERSIONS}]\")
  message(STATUS \"bptt-optional: message [\${${package}_NOT_FOUND_MESSAGE}]\")
endif()
")
  set(BPTT_OPTIONAL_PROBE "${dir}/${package}.cmake")
  # The probe searches as this project does: the same compilers, paths and hints (forced or
  # removed, so that what an earlier probe cached never wins over this configure's).
  set(cache "")
  foreach(variable IN ITEMS CMAKE_PREFIX_PATH CMAKE_FRAMEWORK_PATH CMAKE_FIND_ROOT_PATH CMAKE_SYSROOT
                            CMAKE_TOOLCHAIN_FILE CMAKE_MODULE_PATH CMAKE_LIBRARY_ARCHITECTURE CMAKE_MAKE_PROGRAM
                            CMAKE_C_COMPILER CMAKE_CXX_COMPILER CMAKE_FIND_PACKAGE_PREFER_CONFIG
                            CMAKE_FIND_USE_PACKAGE_REGISTRY CMAKE_IGNORE_PATH CMAKE_IGNORE_PREFIX_PATH
                            CMAKE_SYSTEM_IGNORE_PATH CMAKE_SYSTEM_IGNORE_PREFIX_PATH ${package}_DIR ${package}_ROOT
                            BPTT_OPTIONAL_PROBE ${BPTT_OPTIONAL_VARIABLES})
    if(DEFINED ${variable})
      string(REPLACE "\\" "\\\\" value "${${variable}}")
      string(REPLACE "\"" "\\\"" value "${value}")
      string(APPEND cache "set(${variable} \"${value}\" CACHE STRING \"\" FORCE)\n")
    else()
      string(APPEND cache "unset(${variable} CACHE)\n")
    endif()
  endforeach()
  file(WRITE "${dir}/${package}-cache.cmake" "${cache}")
  execute_process(COMMAND "${CMAKE_COMMAND}" -G "${CMAKE_GENERATOR}" -C "${dir}/${package}-cache.cmake" -S "${dir}" -B "${dir}/build"
                  RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(status EQUAL 0 AND out MATCHES "bptt-optional: found")
    set(reason "")
  elseif(status EQUAL 0 AND out MATCHES "bptt-optional: message \\[([^]\n]+)\\]")
    set(reason "${CMAKE_MATCH_1}")
  elseif(status EQUAL 0 AND out MATCHES "bptt-optional: considered \\[([^]\n]+)\\]")
    string(REPLACE ";" ", " versions "${CMAKE_MATCH_1}")
    set(reason "found only version ${versions}, which is not compatible")
  elseif(status EQUAL 0)
    set(reason "not found")
  else()
    # The first paragraph of the first error (its indented lines), on one line, and the
    # package's own file it came through.
    set(reason "its CMake files fail")
    if(err MATCHES "CMake Error[^\n]*\n(( [^\n]*\n?)+)")
      string(REGEX REPLACE "[ \t\n]+" " " error "${CMAKE_MATCH_1}")
      string(STRIP "${error}" error)
      set(reason "${reason}: ${error}")
    endif()
    string(TOLOWER "${package}" lower)
    if(err MATCHES "([^ \t\n]*/(${package}Config|${lower}-config)\\.cmake)")
      set(reason "${reason} (${CMAKE_MATCH_1})")
    endif()
  endif()
  set(BPTT_OPTIONAL_REASON "${reason}" PARENT_SCOPE)
endfunction()

macro(bptt_find_optional package)
  _bptt_probe_optional(${package} ${ARGN})
  if(BPTT_OPTIONAL_REASON STREQUAL "")
    find_package(${package} ${ARGN} QUIET)
    if(NOT ${package}_FOUND)
      set(BPTT_OPTIONAL_REASON "not found")
    endif()
  else()
    set(${package}_FOUND FALSE)
  endif()
endmacro()

# bptt_check_openblas(<library> <result>): whether a program calling sgemm_ links with <library>
# (a library that is there but not a BLAS, or a broken one, fails this).
function(bptt_check_openblas library result)
  include(CheckCXXSourceCompiles)
  set(CMAKE_REQUIRED_LIBRARIES "${library}")
  set(CMAKE_REQUIRED_QUIET ON)
  check_cxx_source_compiles([[
    extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                           const int*, const float*, const int*, const float*, float*, const int*);
    int main() {
      const int n = 1;
      const float one = 1, a = 2, b = 3;
      float c = 0;
      sgemm_("N", "N", &n, &n, &n, &one, &a, &n, &b, &n, &one, &c, &n);
      return c == 6 ? 0 : 1;
    }]] ${result})
endfunction()
