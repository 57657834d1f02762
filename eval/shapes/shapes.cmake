# ShapesVQA generator: static library plm_shapes (for tests) and the prunelm-shapes executable.
# Included from the top-level CMakeLists.txt; paths are relative to this file, so it does not
# matter where the include() sits. Depends on libpng and pthreads only.
if(NOT TARGET PNG::PNG)
  find_package(PNG REQUIRED)
endif()
if(NOT TARGET Threads::Threads)
  find_package(Threads REQUIRED)
endif()

set(PLM_SHAPES_DIR ${CMAKE_CURRENT_LIST_DIR})
get_filename_component(PLM_SHAPES_ROOT ${CMAKE_CURRENT_LIST_DIR}/../.. ABSOLUTE)

add_library(plm_shapes STATIC
  ${PLM_SHAPES_DIR}/shp_prng.c
  ${PLM_SHAPES_DIR}/shp_raster.c
  ${PLM_SHAPES_DIR}/shp_font.c
  ${PLM_SHAPES_DIR}/shp_background.c
  ${PLM_SHAPES_DIR}/shp_scene.c
  ${PLM_SHAPES_DIR}/shp_question.c
  ${PLM_SHAPES_DIR}/shp_text.c
  ${PLM_SHAPES_DIR}/shp_png.c
  ${PLM_SHAPES_DIR}/shp_util.c
  ${PLM_SHAPES_DIR}/shp_gen.c)
# shapes.h includes prunelm.h for plm_status / plm_error only; no library symbol is used.
target_include_directories(plm_shapes PUBLIC ${PLM_SHAPES_DIR} ${PLM_SHAPES_ROOT}/include)
target_compile_definitions(plm_shapes PRIVATE _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE)
target_link_libraries(plm_shapes PUBLIC PNG::PNG Threads::Threads)

add_executable(prunelm-shapes ${PLM_SHAPES_DIR}/main.c)
target_compile_definitions(prunelm-shapes PRIVATE _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE)
target_link_libraries(prunelm-shapes PRIVATE plm_shapes)

# tests/test_shapes_*.c (a scene and its pixels, the VQA task, the text tasks) become targets in
# the top-level tests loop; link them to plm_shapes and tell them where the CLI is, whether that
# loop runs before or after this include().
set(PLM_SHAPES_TESTS test_shapes_scene test_shapes_vqa test_shapes_text)
function(plm_shapes_wire_test)
  foreach(t IN LISTS PLM_SHAPES_TESTS)
    if(TARGET ${t})
      target_link_libraries(${t} PRIVATE plm_shapes)
      target_compile_definitions(${t} PRIVATE PLM_SHAPES_WIRED=1
        PLM_SHAPES_CLI="$<TARGET_FILE:prunelm-shapes>")
      add_dependencies(${t} prunelm-shapes)
    endif()
  endforeach()
endfunction()
if(TARGET test_shapes_scene OR CMAKE_VERSION VERSION_LESS 3.19)
  plm_shapes_wire_test()
else()
  cmake_language(DEFER CALL plm_shapes_wire_test)
endif()
