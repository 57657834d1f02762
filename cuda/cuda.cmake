# The CUDA backend (included by CMakeLists.txt when PLM_CUDA is ON, before the prunelm target is
# declared). Fills PLM_CUDA_SOURCES and PLM_CUDA_LIBS, and builds the GPU test executable.

# The top level's warning flags are gcc's; nvcc rejects them. Targets copy the directory's
# options when they are declared (after this file), so restrict those options to C here.
get_directory_property(plm_dir_opts COMPILE_OPTIONS)
set(plm_c_opts "")
foreach(opt IN LISTS plm_dir_opts)
  list(APPEND plm_c_opts "$<$<COMPILE_LANGUAGE:C>:${opt}>")
endforeach()
set_directory_properties(PROPERTIES COMPILE_OPTIONS "${plm_c_opts}")

# Hopper first: sm_90a machine code (wgmma/setmaxnreg for later kernels) plus compute_90 PTX the
# driver can compile for newer chips. Override for other GPUs, e.g.
# -DPLM_CUDA_GENCODE="-gencode=arch=compute_80,code=sm_80;-gencode=arch=compute_90a,code=sm_90a".
set(PLM_CUDA_GENCODE
  "-gencode=arch=compute_90a,code=sm_90a;-gencode=arch=compute_90,code=compute_90"
  CACHE STRING "nvcc -gencode flags for the CUDA backend")
# OFF: CMake adds no -arch of its own (its architecture list cannot spell "90a" in 3.25).
set(CMAKE_CUDA_ARCHITECTURES OFF)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_EXTENSIONS OFF)
# Static runtime: executables need only the driver and cuBLAS on the GPU machine.
set(CMAKE_CUDA_RUNTIME_LIBRARY Static)

set(PLM_CUDA_SOURCES
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/backend_cuda.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_matmul.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_norm.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_elementwise.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_rope.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_attention.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_attention_tc.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_attn_probs.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_attn_blocks.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_attn_delta.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_kv_bitmap.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_kv_think.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_kv_int4.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_kv_rows.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_gemv.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_attn_decode.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_graph.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_timing.cu
  ${CMAKE_CURRENT_SOURCE_DIR}/cuda/cu_profile.cu)
set_source_files_properties(${PLM_CUDA_SOURCES} PROPERTIES
  COMPILE_OPTIONS "${PLM_CUDA_GENCODE};-lineinfo;-Xcompiler=-Wall,-Wno-unused-function")

# stdc++: the .cu objects are C++; the C executables that link libprunelm.a may be linked by
# the C driver, which would not add it.
set(PLM_CUDA_LIBS CUDA::cudart_static CUDA::cublasLt CUDA::cublas stdc++)

# ---- GPU tests: plain C (no Criterion on the GPU machine), run by tests/gpu/run.sh ----------
set(PLM_GPU_DIR ${CMAKE_BINARY_DIR}/gpu)
# Every op against the CPU backend (test_cuda_ops), and the decode step's kernels: GEMV, the
# fused decoder ops, recorded CUDA-graph steps and split-K attention (test_cuda_decode).
foreach(plm_gpu_exe test_cuda_ops test_cuda_decode)
  add_executable(${plm_gpu_exe} ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/${plm_gpu_exe}.c)
  target_include_directories(${plm_gpu_exe} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${plm_gpu_exe} PRIVATE prunelm m)
  set_target_properties(${plm_gpu_exe} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PLM_GPU_DIR})
endforeach()

# FlexPrefill's attention_blocks and DeltaLLM's attention_delta against the CPU, the
# block-sparse prefill benchmark (bench_attn_blocks OUT.md), and float32 vs tensor-core
# attention (bench_attention OUT.md).
foreach(plm_gpu_exe test_cuda_blocks bench_attn_blocks bench_attention)
  add_executable(${plm_gpu_exe} ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/${plm_gpu_exe}.c)
  target_include_directories(${plm_gpu_exe} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${plm_gpu_exe} PRIVATE prunelm m)
  set_target_properties(${plm_gpu_exe} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PLM_GPU_DIR})
endforeach()

# The GPU machine lacks some of the shared libraries libprunelm links (cJSON, OpenBLAS and
# its Fortran runtime, libpng): copy them beside the test so run.sh can put them on
# LD_LIBRARY_PATH. cuBLAS is not copied: the GPU machine has the same CUDA 13 toolkit.
add_executable(test_cuda_kv ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/test_cuda_kv.c)
target_include_directories(test_cuda_kv PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_cuda_kv PRIVATE prunelm m)
set_target_properties(test_cuda_kv PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PLM_GPU_DIR})

add_executable(test_cuda_model ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/test_cuda_model.c)
target_include_directories(test_cuda_model PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(test_cuda_model PRIVATE prunelm m)
set_target_properties(test_cuda_model PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PLM_GPU_DIR})

# Mustafar's bitmap KV store: CUDA ops against the CPU ones, and the decode benchmark.
foreach(plm_gpu_exe test_cuda_bitmap bench_kv_bitmap)
  add_executable(${plm_gpu_exe} ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/${plm_gpu_exe}.c)
  target_include_directories(${plm_gpu_exe} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${plm_gpu_exe} PRIVATE prunelm m)
  set_target_properties(${plm_gpu_exe} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PLM_GPU_DIR})
endforeach()

# ThinK's thin-key and KIVI's int4 KV stores: CUDA ops against the CPU ones, and the decode
# benchmark against dense attention (bench_kv_store OUT.txt).
foreach(plm_gpu_exe test_cuda_kvstore bench_kv_store)
  add_executable(${plm_gpu_exe} ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/${plm_gpu_exe}.c)
  target_include_directories(${plm_gpu_exe} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(${plm_gpu_exe} PRIVATE prunelm m)
  set_target_properties(${plm_gpu_exe} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PLM_GPU_DIR})
endforeach()

# Decode kernels (GEMV, split-K attention) against cuBLASLt and the prefill kernel, and the
# memory-bandwidth bound (bench_decode OUT.txt).
add_executable(bench_decode ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/bench_decode.c)
target_include_directories(bench_decode PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(bench_decode PRIVATE prunelm m)
set_target_properties(bench_decode PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PLM_GPU_DIR})

# The patch embedding as prunelm's patchify + matmul against cuDNN's convolution (issue 4:
# measure both; bench_patch_embed OUT.txt). cuDNN is linked here only: the library keeps the
# faster path, and the GPU machine has cuDNN while CI-like machines may not.
find_library(PLM_CUDNN_LIB NAMES cudnn HINTS ${CUDAToolkit_LIBRARY_DIR})
find_path(PLM_CUDNN_INCLUDE cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
if(PLM_CUDNN_LIB AND PLM_CUDNN_INCLUDE)
  add_executable(bench_patch_embed ${CMAKE_CURRENT_SOURCE_DIR}/tests/gpu/bench_patch_embed.c)
  target_include_directories(bench_patch_embed PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}
                             ${PLM_CUDNN_INCLUDE})
  target_link_libraries(bench_patch_embed PRIVATE prunelm CUDA::cudart ${PLM_CUDNN_LIB} m)
  # cuDNN 9 marks its convolution API deprecated (the graph API replaces it); it still ships
  target_compile_options(bench_patch_embed PRIVATE -Wno-deprecated-declarations)
  set_target_properties(bench_patch_embed PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PLM_GPU_DIR})
else()
  message(STATUS "prunelm: cuDNN not found: no bench_patch_embed")
endif()

set(plm_gpu_copied "")
foreach(soname libcjson.so.1 libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libpng16.so.16)
  string(MAKE_C_IDENTIFIER ${soname} plm_var)
  find_library(PLM_RT_${plm_var} NAMES ${soname})
  if(PLM_RT_${plm_var})
    get_filename_component(plm_real ${PLM_RT_${plm_var}} REALPATH)
    add_custom_command(TARGET test_cuda_ops POST_BUILD
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PLM_GPU_DIR}/lib
      COMMAND ${CMAKE_COMMAND} -E copy_if_different ${plm_real} ${PLM_GPU_DIR}/lib/${soname}
      VERBATIM)
    list(APPEND plm_gpu_copied ${soname})
  endif()
endforeach()
message(STATUS "prunelm: CUDA backend ON (${PLM_CUDA_GENCODE}); GPU test libs: ${plm_gpu_copied}")
