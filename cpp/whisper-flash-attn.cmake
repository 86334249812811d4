# Builds cpp/flash_attn_tiled.inc into whisper.cpp's copy of ggml (included by
# whisper-patches.cmake, which says how the patches are applied): the tiled kernel is included
# ahead of ggml's flash-attention entry point, and the entry point tries it before ggml's own
# kernel.

set(ops "${CMAKE_SOURCE_DIR}/ggml/src/ggml-cpu/ops.cpp")
file(READ "${ops}" text)
if(NOT text MATCHES "diarized_flash_attn_tiled")
    set(entry "static void ggml_compute_forward_flash_attn_ext_f16(\n")
    set(call "        ggml_compute_forward_flash_attn_ext_f16_one_chunk(params, dst, ir0, ir1);\n")
    string(FIND "${text}" "${entry}" at_entry)
    string(FIND "${text}" "${call}" at_call)
    if(at_entry EQUAL -1 OR at_call EQUAL -1)
        message(FATAL_ERROR "diarized: ${ops} is not the ggml this patch was written for "
                            "(flash-attention anchors not found); update cpp/whisper-flash-attn.cmake")
    endif()
    string(REPLACE "${entry}"
        "#include \"${CMAKE_CURRENT_LIST_DIR}/flash_attn_tiled.inc\"\n\n${entry}" text "${text}")
    string(REPLACE "${call}"
        "        if (!diarized_flash_attn_tiled(params, dst, ir0, ir1)) {\n    ${call}        }\n"
        text "${text}")
    file(WRITE "${ops}" "${text}")
    message(STATUS "diarized: tiled flash-attention kernel patched into ${ops}")
endif()
