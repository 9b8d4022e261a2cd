// A stand-in tokenizer for a server that has no vocabulary.
//
// Why: the engine always owns a Tokenizer (it decodes text for every
// generated token and asks for the end-of-text id), but a server started on a
// model whose vocabulary file is unavailable (e.g. the synthetic fallback
// when the World vocabulary cannot be downloaded) can still serve token ids.
// This tokenizer maps every id to no bytes, so generations carry token ids
// with empty text, and the transport rejects text input with
// FAILED_PRECONDITION "no vocabulary loaded; send token ids" before it could
// reach Encode.
#ifndef RWKV_SERVER_ID_ONLY_TOKENIZER_H_
#define RWKV_SERVER_ID_ONLY_TOKENIZER_H_

#include <cstdint>
#include <memory>

#include "engine/tokenizer/tokenizer.h"

namespace rwkv {

// The name() of the id-only tokenizer; the transport checks it to know that
// text cannot be encoded or decoded.
inline constexpr char kIdOnlyTokenizerName[] = "none";

// vocab_size: the model's. end_of_text_id: the id that ends a generation, or
// -1 for none. Encode returns no ids (callers must not send it text); Decode
// and TokenBytes return empty text for every valid id.
std::unique_ptr<Tokenizer> MakeIdOnlyTokenizer(int32_t vocab_size, int32_t end_of_text_id);

// True when `tokenizer` can turn text into ids and back (not the id-only one).
bool HasVocabulary(const Tokenizer& tokenizer);

}  // namespace rwkv

#endif  // RWKV_SERVER_ID_ONLY_TOKENIZER_H_
