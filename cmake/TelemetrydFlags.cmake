# One INTERFACE target carries the warning and sanitizer flags for every target of the project.
add_library(telemetryd_flags INTERFACE)
add_library(telemetryd::flags ALIAS telemetryd_flags)
target_compile_options(telemetryd_flags INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
  -Wold-style-cast -Woverloaded-virtual -Wno-missing-field-initializers -Wimplicit-fallthrough)
if(TELEMETRYD_WERROR)
  target_compile_options(telemetryd_flags INTERFACE -Werror)
endif()
if(TELEMETRYD_SANITIZE)
  target_compile_options(telemetryd_flags INTERFACE
    -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_link_options(telemetryd_flags INTERFACE -fsanitize=address,undefined)
endif()
if(TELEMETRYD_FUZZ)
  # Coverage instrumentation for every library; the fuzz executables add -fsanitize=fuzzer.
  target_compile_options(telemetryd_flags INTERFACE
    -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  target_link_options(telemetryd_flags INTERFACE -fsanitize=address,undefined)
endif()

if(TELEMETRYD_TESTS)
  file(WRITE ${CMAKE_BINARY_DIR}/doctest_main.cc
       "#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN\n#include <doctest/doctest.h>\n")
  add_library(telemetryd_doctest_main OBJECT ${CMAKE_BINARY_DIR}/doctest_main.cc)
  target_link_libraries(telemetryd_doctest_main PRIVATE doctest::doctest)
endif()

# Declares a test executable built from doctest sources and registers it with CTest.
function(telemetryd_add_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} telemetryd_doctest_main doctest::doctest
                                        telemetryd::flags)
  add_test(NAME ${name} COMMAND ${name})
  if(ARG_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}")
  endif()
endfunction()

# Declares a libFuzzer executable (built only with TELEMETRYD_FUZZ, by clang).
function(telemetryd_add_fuzzer name source)
  cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
  add_executable(${name} ${source})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} telemetryd::flags)
  target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
endfunction()
