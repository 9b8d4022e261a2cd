// Fetching the default model and vocabulary into a local cache.
//
// Why: `rwkv-server` with no --model should just work on a fresh machine, so
// it downloads a small released checkpoint (and the World vocabulary) once
// and reuses it. A download goes to a unique temp file in the cache dir and
// is renamed into place only when complete, so an interrupted download is
// never mistaken for a model. Where the network is unreachable (CI, air-gapped
// hosts), it fails within seconds (connect timeout) with a plain message, and
// the caller falls back to a synthetic model.
#ifndef RWKV_SERVER_MODEL_DOWNLOAD_H_
#define RWKV_SERVER_MODEL_DOWNLOAD_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace rwkv {

inline constexpr char kDefaultModelFile[] = "rwkv7-g1a-0.1b-20250728-ctx4096.pth";
inline constexpr char kDefaultModelUrlPrefix[] = "https://huggingface.co/BlinkDL/rwkv7-g1/resolve/main/";
inline constexpr char kWorldVocabFile[] = "rwkv_vocab_v20230424.txt";
inline constexpr char kWorldVocabUrl[] =
    "https://raw.githubusercontent.com/BlinkDL/ChatRWKV/main/rwkv_pip_package/src/rwkv/"
    "rwkv_vocab_v20230424.txt";

// The URLs used: the constants above, unless $RWKV_MODEL_URL /
// $RWKV_VOCAB_URL override them (mirrors, tests with file:// URLs).
std::string DefaultModelUrl();
std::string WorldVocabUrl();

// The cache directory: $RWKV_CACHE_DIR, else $XDG_CACHE_HOME/rwkv-server,
// else $HOME/.cache/rwkv-server. Empty variables count as unset.
// FAILED_PRECONDITION when none is set.
absl::StatusOr<std::string> CacheDir();
// The same rule on given values (nullptr = unset), for tests.
absl::StatusOr<std::string> CacheDirFrom(const char* rwkv_cache_dir, const char* xdg_cache_home,
                                         const char* home);

struct DownloadOptions {
  long connect_timeout_seconds = 5;  // includes name resolution
  // Abort when fewer than 1 KiB/s arrive for this long (a stalled transfer).
  long stall_timeout_seconds = 60;
  bool progress = true;  // a progress bar on stderr when it is a terminal
};

struct CachedFile {
  std::string path;
  std::string sha256;       // lowercase hex
  bool downloaded = false;  // false: reused from the cache
};

// `dir`/`file_name` when it exists (non-empty), else downloads `url` there
// (creating `dir`). UNAVAILABLE naming the URL and the reason when the
// download fails; the cache is then unchanged.
absl::StatusOr<CachedFile> EnsureCached(const std::string& url, const std::string& dir,
                                        const std::string& file_name, const DownloadOptions& options = {});

// SHA-256 of a file's contents / of bytes, as lowercase hex.
absl::StatusOr<std::string> Sha256File(const std::string& path);
std::string Sha256Hex(std::string_view bytes);

}  // namespace rwkv

#endif  // RWKV_SERVER_MODEL_DOWNLOAD_H_
