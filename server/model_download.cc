// Cached downloads with libcurl; SHA-256 with OpenSSL's EVP interface.
//
// Why libcurl: HTTPS with redirects (Hugging Face answers with a redirect to
// its CDN), proxies from the environment and timeouts, without writing any
// of it. The temp-file-then-rename dance and the stale-temp cleanup are ours.
#include "server/model_download.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <system_error>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "engine/model/progress_bar.h"

namespace rwkv {
namespace {

namespace fs = std::filesystem;

constexpr char kTempInfix[] = ".part.";

std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : fallback;
}

bool Set(const char* v) { return v != nullptr && *v != '\0'; }

// Removes temp files of `file_name` older than an hour: left by a crashed or
// killed download (a live one is younger or being renamed).
void RemoveStaleTemps(const std::string& dir, const std::string& file_name) {
  const std::string prefix = absl::StrCat(".", file_name, kTempInfix);
  std::error_code ec;
  const auto now = fs::file_time_type::clock::now();
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const auto mtime = fs::last_write_time(entry.path(), ec);
    if (!ec && now - mtime > std::chrono::hours(1)) fs::remove(entry.path(), ec);
  }
}

struct Transfer {
  FILE* out = nullptr;
  std::string label;
  bool progress = false;
  std::optional<ProgressBar> bar;  // created once the total size is known
};

size_t WriteToFile(char* data, size_t size, size_t n, void* user) {
  auto* t = static_cast<Transfer*>(user);
  return std::fwrite(data, size, n, t->out) * size;
}

int OnProgress(void* user, curl_off_t total, curl_off_t done, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (!t->progress || total <= 0) return 0;
  if (!t->bar) t->bar.emplace(absl::StrCat(t->label, " (", total / (1 << 20), " MiB)"), total, true);
  t->bar->Update(done);
  return 0;
}

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// Downloads `url` into `temp_path`. UNAVAILABLE with curl's reason on failure.
absl::Status DownloadTo(const std::string& url, const std::string& temp_path, const std::string& label,
                        const DownloadOptions& options) {
  GlobalInitOnce();
  Transfer t;
  t.out = std::fopen(temp_path.c_str(), "wb");
  if (t.out == nullptr) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", temp_path, ": ", std::strerror(errno)));
  }
  t.label = label;
  t.progress = options.progress;
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  char error[CURL_ERROR_SIZE] = {};
  CURLcode rc = CURLE_FAILED_INIT;
  if (curl != nullptr) {
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);  // HTTP >= 400 is an error, not a body
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, options.connect_timeout_seconds);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, options.stall_timeout_seconds);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "rwkv-server");
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, WriteToFile);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, OnProgress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    rc = curl_easy_perform(c);
  }
  if (t.bar) t.bar->Finish();
  const bool flushed = std::fflush(t.out) == 0 && fsync(fileno(t.out)) == 0;
  const bool closed = std::fclose(t.out) == 0;
  if (rc != CURLE_OK) {
    const char* why = error[0] != '\0' ? error : curl_easy_strerror(rc);
    return absl::UnavailableError(absl::StrCat("cannot download ", url, ": ", why));
  }
  if (!flushed || !closed) {
    return absl::InternalError(absl::StrCat("cannot write ", temp_path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

std::string DefaultModelUrl() {
  return EnvOr("RWKV_MODEL_URL", absl::StrCat(kDefaultModelUrlPrefix, kDefaultModelFile).c_str());
}

std::string WorldVocabUrl() { return EnvOr("RWKV_VOCAB_URL", kWorldVocabUrl); }

absl::StatusOr<std::string> CacheDirFrom(const char* rwkv_cache_dir, const char* xdg_cache_home,
                                         const char* home) {
  if (Set(rwkv_cache_dir)) return std::string(rwkv_cache_dir);
  if (Set(xdg_cache_home)) return absl::StrCat(xdg_cache_home, "/rwkv-server");
  if (Set(home)) return absl::StrCat(home, "/.cache/rwkv-server");
  return absl::FailedPreconditionError("no cache directory: set RWKV_CACHE_DIR (or XDG_CACHE_HOME or HOME)");
}

absl::StatusOr<std::string> CacheDir() {
  return CacheDirFrom(std::getenv("RWKV_CACHE_DIR"), std::getenv("XDG_CACHE_HOME"), std::getenv("HOME"));
}

absl::StatusOr<CachedFile> EnsureCached(const std::string& url, const std::string& dir,
                                        const std::string& file_name, const DownloadOptions& options) {
  CachedFile result;
  result.path = absl::StrCat(dir, "/", file_name);
  std::error_code ec;
  if (fs::is_regular_file(result.path, ec) && fs::file_size(result.path, ec) > 0 && !ec) {
    auto sha = Sha256File(result.path);
    if (!sha.ok()) return sha.status();
    result.sha256 = *std::move(sha);
    return result;
  }
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot create cache directory ", dir, ": ", ec.message()));
  }
  RemoveStaleTemps(dir, file_name);
  std::random_device rd;
  const std::string temp = absl::StrCat(dir, "/.", file_name, kTempInfix, getpid(), ".", rd());
  absl::Status s = DownloadTo(url, temp, absl::StrCat("downloading ", file_name), options);
  if (s.ok() && std::rename(temp.c_str(), result.path.c_str()) != 0) {
    s = absl::InternalError(
        absl::StrCat("cannot rename ", temp, " to ", result.path, ": ", std::strerror(errno)));
  }
  if (!s.ok()) {
    std::remove(temp.c_str());
    return s;
  }
  // Make the rename durable (best effort: a failure here loses nothing but
  // a re-download after a power cut).
  if (int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY); dfd >= 0) {
    (void)fsync(dfd);
    close(dfd);
  }
  auto sha = Sha256File(result.path);
  if (!sha.ok()) return sha.status();
  result.sha256 = *std::move(sha);
  result.downloaded = true;
  return result;
}

std::string Sha256Hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), len));
}

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (f == nullptr)
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("OpenSSL: cannot initialize SHA-256");
  }
  std::vector<char> buffer(1 << 20);
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), f.get())) > 0) {
    EVP_DigestUpdate(ctx.get(), buffer.data(), n);
  }
  if (std::ferror(f.get())) return absl::DataLossError(absl::StrCat("error reading ", path));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &len);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), len));
}

}  // namespace rwkv
