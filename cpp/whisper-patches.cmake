# Our patches to the copy of whisper.cpp that whisper-rs-sys builds.
#
# whisper-rs-sys copies the whisper.cpp sources into its OUT_DIR and runs CMake there, passing on
# every CMAKE_* environment variable. `.cargo/config.toml` sets CMAKE_PROJECT_whisper.cpp_INCLUDE
# to this file, so CMake runs it inside whisper.cpp's project() call, before anything is
# configured. Each patch edits that copy only (never the crate in ~/.cargo), is idempotent
# (project() runs twice and OUT_DIR survives rebuilds) and stops the build when its anchors are
# gone, rather than ship without it.
#
# Cargo does not rebuild whisper-rs-sys when these files change: after editing them,
# `cargo clean --release -p whisper-rs-sys`.

include("${CMAKE_CURRENT_LIST_DIR}/whisper-flash-attn.cmake")
include("${CMAKE_CURRENT_LIST_DIR}/whisper-decoder-q8.cmake")
