// Internal entry points of the file readers, taking an already opened file.
//
// Why: OpenTensorSource maps a file once, sniffs its format and hands the
// mapping to the right reader; tests feed in-memory files the same way.
#ifndef RWKV_ENGINE_LOADER_READERS_H_
#define RWKV_ENGINE_LOADER_READERS_H_

#include <memory>

#include "absl/status/statusor.h"
#include "engine/loader/mapped_file.h"
#include "engine/loader/tensor_source.h"

namespace rwkv::loader_internal {

absl::StatusOr<std::unique_ptr<TensorSource>> OpenPthFile(std::unique_ptr<MappedFile> file);
absl::StatusOr<std::unique_ptr<TensorSource>> OpenSafetensorsFile(std::unique_ptr<MappedFile> file);
absl::StatusOr<std::unique_ptr<TensorSource>> OpenRwkvCppFile(std::unique_ptr<MappedFile> file);
// Dispatches by content, like OpenTensorSource.
absl::StatusOr<std::unique_ptr<TensorSource>> OpenAnyFile(std::unique_ptr<MappedFile> file);

}  // namespace rwkv::loader_internal

#endif  // RWKV_ENGINE_LOADER_READERS_H_
