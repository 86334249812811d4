# Builds cpp/flash_attn_tiled.inc into whisper.cpp's copy of ggml.
#
# whisper-rs-sys copies the whisper.cpp sources into its OUT_DIR and runs CMake there, passing on
# every CMAKE_* environment variable. `.cargo/config.toml` sets CMAKE_PROJECT_whisper.cpp_INCLUDE
# to this file, so CMake runs it inside whisper.cpp's project() call, before ggml is configured.
# It edits that copy only (never the crate in ~/.cargo): the tiled kernel is included ahead of
# ggml's flash-attention entry point, and the entry point tries it before ggml's own kernel.
# Idempotent (project() is called twice, and OUT_DIR survives rebuilds). If the whisper.cpp
# version changes and the two anchors below are gone, the build stops here rather than ship
# without the kernel.
#
# Cargo does not rebuild whisper-rs-sys when this file or the kernel changes: after editing them,
# `cargo clean --release -p whisper-rs-sys`.

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
