// OpenTensorSource: picks the reader by looking at the file's first bytes.
//
// Why by content: model files are renamed freely (.pth, .bin, .st,
// .safetensors, or no extension), so the extension is not trusted. The
// three formats have unambiguous openings: a zip local header ("PK\3\4"),
// the ggmf magic, or a plausible u64 header length followed by '{'.
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/loader/binary_util.h"
#include "engine/loader/mapped_file.h"
#include "engine/loader/readers.h"
#include "engine/loader/tensor_source.h"

namespace rwkv {
namespace loader_internal {

absl::StatusOr<std::unique_ptr<TensorSource>> OpenAnyFile(std::unique_ptr<MappedFile> file) {
  const uint8_t* d = file->data();
  const uint64_t size = file->size();
  if (size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(file->path(), ": file is empty, not a model file"));
  }
  if (size >= 4 && d[0] == 'P' && d[1] == 'K' && d[2] == 3 && d[3] == 4) {
    return OpenPthFile(std::move(file));
  }
  if (size >= 4 && LoadLE32(d) == 0x67676d66) return OpenRwkvCppFile(std::move(file));
  if (size >= 9 && d[8] == '{') {
    const uint64_t header_len = LoadLE64(d);
    if (header_len >= 2 && header_len <= size - 8) return OpenSafetensorsFile(std::move(file));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unrecognised model file format: ", file->path(),
                   " (expected a torch.save .pth zip, a safetensors file or an rwkv.cpp .bin)"));
}

}  // namespace loader_internal

absl::StatusOr<std::unique_ptr<TensorSource>> OpenTensorSource(const std::string& path) {
  absl::StatusOr<std::unique_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok()) return file.status();
  return loader_internal::OpenAnyFile(std::move(*file));
}

}  // namespace rwkv
