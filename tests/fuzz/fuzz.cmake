# Fuzz targets (tests/fuzz/fuzz_*.c, run by tests/fuzz/run.sh) and their replay in the test
# suite. Included at the end of the top-level CMakeLists.txt, after the tests are defined.
#
#   CC=clang cmake -S . -B build-fuzz -DPLM_FUZZ=ON -DPLM_TESTS=OFF -DPLM_CUDA=OFF
#
# Each tests/fuzz/fuzz_<name>.c defines int fuzz_<name>(const uint8_t *, size_t) and, unless
# PLM_FUZZ_NO_MAIN is defined, libFuzzer's LLVMFuzzerTestOneInput calling it.

option(PLM_FUZZ "Build the libFuzzer targets in tests/fuzz (clang only)" OFF)

set(PLM_FUZZ_TARGETS image safetensors config tokenizer_json tokenize jsonl prune_spec)
set(PLM_FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})

# The Criterion replay (tests/test_fuzz_regressions.c) runs every seed and every regression
# input through the same bodies, compiled as plain functions, in every build.
if(TARGET test_fuzz_regressions)
  foreach(t ${PLM_FUZZ_TARGETS})
    target_sources(test_fuzz_regressions PRIVATE ${PLM_FUZZ_DIR}/fuzz_${t}.c)
  endforeach()
  target_compile_definitions(test_fuzz_regressions PRIVATE PLM_FUZZ_NO_MAIN=1)
endif()

if(PLM_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "PLM_FUZZ needs clang for libFuzzer, but the C compiler is "
            "${CMAKE_C_COMPILER_ID} (${CMAKE_C_COMPILER}). Configure a fresh build directory "
            "with CC=clang: CC=clang cmake -S . -B build-fuzz -DPLM_FUZZ=ON -DPLM_TESTS=OFF "
            "-DPLM_CUDA=OFF")
  endif()
  if(PLM_CUDA)
    message(FATAL_ERROR "PLM_FUZZ: configure with -DPLM_CUDA=OFF (nvcc objects carry no "
            "sanitizer instrumentation)")
  endif()
  # Any UBSan report is a finding: make it fatal so libFuzzer stops and saves the input.
  set(PLM_FUZZ_SAN address,undefined)
  set(PLM_FUZZ_FLAGS -fno-omit-frame-pointer -fno-sanitize-recover=all -g)
  # The libraries get coverage instrumentation without libFuzzer's main; everything that links
  # them (the CLI, examples, benches) gets the sanitizer runtimes through INTERFACE.
  foreach(lib prunelm plm_eval)
    target_compile_options(${lib} PRIVATE -fsanitize=fuzzer-no-link,${PLM_FUZZ_SAN}
                           ${PLM_FUZZ_FLAGS})
    target_link_options(${lib} INTERFACE -fsanitize=${PLM_FUZZ_SAN})
  endforeach()
  # Comparison tracing in the per-pixel loops of resizing and preprocessing costs 80% of
  # fuzz_image's time (a 1x1 image is still resized to 336x336) and guides nothing: their
  # comparisons are loop bounds. Edge coverage stays.
  set_source_files_properties(${CMAKE_CURRENT_SOURCE_DIR}/vision/resize.c
    ${CMAKE_CURRENT_SOURCE_DIR}/vision/preprocess.c ${PLM_FUZZ_DIR}/fuzz_image.c
    PROPERTIES COMPILE_OPTIONS -fno-sanitize-coverage=trace-cmp)
  foreach(t ${PLM_FUZZ_TARGETS})
    add_executable(fuzz_${t} ${PLM_FUZZ_DIR}/fuzz_${t}.c)
    target_include_directories(fuzz_${t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}
                               ${CJSON_INCLUDE_DIRS})
    target_compile_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,${PLM_FUZZ_SAN}
                           ${PLM_FUZZ_FLAGS})
    target_link_options(fuzz_${t} PRIVATE -fsanitize=fuzzer,${PLM_FUZZ_SAN})
    target_link_libraries(fuzz_${t} PRIVATE prunelm m)
    target_compile_definitions(fuzz_${t} PRIVATE PLM_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
  endforeach()
  target_link_libraries(fuzz_jsonl PRIVATE plm_eval)
  add_custom_target(fuzz)
  foreach(t ${PLM_FUZZ_TARGETS})
    add_dependencies(fuzz fuzz_${t})
  endforeach()
endif()
