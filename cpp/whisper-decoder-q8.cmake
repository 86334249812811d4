# Holds the decoder's weight matrices of a 16-bit Whisper model in q8_0 (included by
# whisper-patches.cmake, which says how the patches are applied).
#
# Decoding is one token at a time, so its matrix products are bound by reading the weights:
# q8_0 halves what each token reads (whisper-cli on the 5-minute meeting: 6.2 instead of 10.0 ms
# per token). whisper.cpp's loader takes one weight type for every matrix, and a whole-q8_0 model
# also changes the encoder; this patch quantizes only the decoder (token embedding / output
# projection, self- and cross-attention, MLP) while the file is read, when the loading thread has
# asked for it with `diarized_whisper_decoder_q8(1)` (src/asr.rs), and reads back how many matrices
# it got with `diarized_whisper_decoder_q8_matrices()`. Other weight types load as the file has them.

set(src "${CMAKE_SOURCE_DIR}/src/whisper.cpp")
file(READ "${src}" text)
if(NOT text MATCHES "diarized_whisper_decoder_q8")
    set(load "static bool whisper_model_load(struct whisper_model_loader * loader, whisper_context & wctx) {\n")
    set(types "    const ggml_type vtype = wctx.wtype == GGML_TYPE_F32 ? GGML_TYPE_F32 : GGML_TYPE_F16; // conv type\n")
    set(read "            const size_t bpe = ggml_type_size(ggml_type(ttype));\n")
    # Each anchor once, but the tensor-reading line, which the VAD model's loader (later in the
    # file) has too: the first is the Whisper model's.
    foreach(anchor load types read)
        string(FIND "${text}" "${${anchor}}" first)
        string(FIND "${text}" "${${anchor}}" last REVERSE)
        if(first EQUAL -1 OR (NOT anchor STREQUAL "read" AND NOT first EQUAL last))
            message(FATAL_ERROR "diarized: ${src} is not the whisper.cpp this patch was written for "
                                "(anchor '${anchor}' not found once); update cpp/whisper-decoder-q8.cmake")
        endif()
    endforeach()

    # The switch, per loading thread so that loads in parallel cannot see each other's choice.
    set(functions [==[
// diarized: decoder matrices of a 16-bit model held in q8_0, when the loading thread asks.
static thread_local bool diarized_decoder_q8 = false;
static thread_local int diarized_decoder_q8_count = 0;

extern "C" void diarized_whisper_decoder_q8(int on) {
    diarized_decoder_q8 = on != 0;
}

// How many matrices this thread's last model load quantized to q8_0.
extern "C" int diarized_whisper_decoder_q8_matrices(void) {
    return diarized_decoder_q8_count;
}

// The type the decoder's matrices are held in, for a model whose matrices are `wtype` and whose
// decoder rows have `n_state` values (q8_0 packs blocks of 32). Asked once per load.
static ggml_type diarized_decoder_type(ggml_type wtype, int32_t n_state) {
    diarized_decoder_q8_count = 0;
    const bool q8 = diarized_decoder_q8 && wtype == GGML_TYPE_F16 && n_state % ggml_blck_size(GGML_TYPE_Q8_0) == 0;
    return q8 ? GGML_TYPE_Q8_0 : wtype;
}

// Reads `tensor`, stored in the file as F16, into its (quantized) type a chunk of rows at a time.
static void diarized_read_quantized(whisper_model_loader * loader, ggml_tensor * tensor) {
    const int64_t n_per_row = tensor->ne[0];
    const int64_t n_rows = ggml_nelements(tensor) / n_per_row;
    const int64_t chunk = 256;
    const size_t row_size = ggml_row_size(tensor->type, n_per_row);
    std::vector<ggml_fp16_t> half(chunk * n_per_row);
    std::vector<float> full(chunk * n_per_row);
    std::vector<char> quantized(ggml_nbytes(tensor));
    for (int64_t row = 0; row < n_rows; row += chunk) {
        const int64_t rows = std::min(chunk, n_rows - row);
        loader->read(loader->context, half.data(), rows * n_per_row * sizeof(ggml_fp16_t));
        ggml_fp16_to_fp32_row(half.data(), full.data(), rows * n_per_row);
        ggml_quantize_chunk(tensor->type, full.data(), quantized.data() + row * row_size, 0, rows, n_per_row, nullptr);
    }
    ggml_backend_tensor_set(tensor, quantized.data(), 0, quantized.size());
}

]==])
    string(REPLACE "${load}" "${functions}${load}" text "${text}")

    string(REPLACE "${types}" "${types}    const ggml_type dtype = diarized_decoder_type(wtype, model.hparams.n_text_state); // diarized: decoder matrices\n"
        text "${text}")
    string(REGEX REPLACE "(ASR_SYSTEM_(DECODER|CROSS), ggml_new_tensor_2d\\(ctx, )wtype," "\\1dtype," text "${text}")
    string(REGEX MATCHALL "ctx, dtype," uses "${text}")
    list(LENGTH uses n_uses)
    if(NOT n_uses EQUAL 11)
        message(FATAL_ERROR "diarized: expected 11 decoder matrices in ${src}, found ${n_uses}; "
                            "update cpp/whisper-decoder-q8.cmake")
    endif()

    set(convert [==[
            if (dtype != wtype && ttype == wtype && tensor->type == dtype) { // diarized: decoder in q8_0
                diarized_read_quantized(loader, tensor);
                diarized_decoder_q8_count++;
                total_size += ggml_nbytes(tensor);
                model.n_loaded++;
                continue;
            }

]==])
    string(FIND "${text}" "${read}" at)
    string(SUBSTRING "${text}" 0 ${at} head)
    string(SUBSTRING "${text}" ${at} -1 tail)
    set(text "${head}${convert}${tail}")
    file(WRITE "${src}" "${text}")
    message(STATUS "diarized: q8_0 decoder loading patched into ${src}")
endif()
