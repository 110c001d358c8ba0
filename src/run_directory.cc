#include "run_directory.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "bptt/curves.h"
#include "bptt/error.h"
#include "bptt/safetensors.h"

namespace bptt {

namespace fs = std::filesystem;

namespace {

// The files a run writes into its directory: what --force removes, and the only names whose
// temporaries are cleaned up.
constexpr std::array<const char*, 9> kRunFiles = {
    "latest.safetensors", "best.safetensors", "metrics.jsonl", "summary.json", "trials.json",
    "curves.svg",         "decay_train.csv",  "heatmap.svg",   "skipped-files.txt"};

std::string ErrnoText() { return std::strerror(errno); }

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const fs::path& path, const std::string& text) {
  WriteFileAtomically(path, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

// A JSON line as text: invalid UTF-8 (which no bptt writer puts there) becomes U+FFFD rather
// than an exception that would end the run.
std::string Line(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// The whole lines of metrics.jsonl that parse, with their steps.
std::vector<std::pair<int64_t, std::string>> MetricsLines(const fs::path& path) {
  std::vector<std::pair<int64_t, std::string>> lines;
  std::istringstream in(ReadAll(path));
  for (std::string line; std::getline(in, line);) {
    if (in.eof()) break;  // no newline after it: a line torn by a crash
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j["step"].is_number_integer()) continue;
    lines.emplace_back(j["step"].get<int64_t>(), line);
  }
  return lines;
}

// DIR/seed-S: a trial of a --trials run.
bool IsTrialDirectory(const fs::directory_entry& entry) {
  static const std::regex kTrial("seed-[0-9]+");
  return entry.is_directory() && std::regex_match(entry.path().filename().string(), kTrial);
}

// Whether a process `pid` exists on this machine.
bool Alive(long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

}  // namespace

bool HoldsRun(const fs::path& dir) {
  std::error_code error;
  for (const char* name : {"latest.safetensors", "best.safetensors", "summary.json", "trials.json"})
    if (fs::exists(dir / name, error)) return true;
  if (fs::file_size(dir / "metrics.jsonl", error) > 0 && !error) return true;
  for (const auto& entry : fs::directory_iterator(dir, error))
    if (IsTrialDirectory(entry) && HoldsRun(entry.path())) return true;
  return false;
}

RunDirectory::RunDirectory(const fs::path& dir, Mode mode, std::ostream& log) : dir_(dir) {
  std::error_code error;
  if (fs::exists(dir_, error) && !fs::is_directory(dir_, error)) throw Error(dir_.string() + ": not a directory");
  fs::create_directories(dir_, error);
  if (error) throw Error(dir_.string() + ": cannot create the run directory: " + error.message());
  Lock(log);
  try {
    if (mode == kNew && HoldsRun(dir_))
      throw Error(dir_.string() + " holds a run already (give --resume " + dir_.string() +
                  " to continue it, --force to replace it, or another --out)");
    if (mode == kReplace) Replace(log);
    RemoveStaleTemporaries();
  } catch (...) {
    ::close(lock_fd_);  // a constructor that throws runs no destructor
    throw;
  }
}

RunDirectory::~RunDirectory() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

void RunDirectory::Lock(std::ostream& log) {
  const fs::path path = dir_ / ".lock";
  lock_fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) throw Error(path.string() + ": cannot create: " + ErrnoText());
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int why = errno;
    if (why == EWOULDBLOCK) {
      std::string owner = ReadAll(path);
      while (!owner.empty() && (owner.back() == '\n' || owner.back() == ' ')) owner.pop_back();
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw Error(dir_.string() + " is in use by another bptt run (" + (owner.empty() ? "pid unknown" : owner) +
                  "); wait for it to end or choose another --out");
    }
    if (why != ENOLCK && why != EOPNOTSUPP && why != ENOSYS) {
      ::close(lock_fd_);
      lock_fd_ = -1;
      throw Error(path.string() + ": cannot lock: " + std::strerror(why));
    }
    log << "bptt train: warning: " << dir_.string() << " is on a file system without locks (" << std::strerror(why)
        << "): nothing keeps another run out of it\n";
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string owner = "pid " + std::to_string(::getpid()) + " on " + host + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, owner.data(), owner.size(), 0) < 0)
    throw Error(path.string() + ": cannot write: " + ErrnoText());
}

void RunDirectory::Replace(std::ostream& log) {
  std::vector<std::string> replaced;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir_, error)) {
    if (IsTrialDirectory(entry) && HoldsRun(entry.path())) {
      RunDirectory trial(entry.path(), kReplace, log);  // locked while its files go
      replaced.push_back(entry.path().filename().string() + "/");
    }
  }
  for (const char* name : kRunFiles) {
    const fs::path path = dir_ / name;
    if (!fs::exists(path, error)) continue;
    std::string what = name;
    if (what == "latest.safetensors") {
      try {
        const Safetensors st = Safetensors::Load(path, [](const std::string&) { return false; });
        what += " (step " + st.metadata().at("step") + ")";
      } catch (const std::exception&) {
        what += " (unreadable)";
      }
    } else if (what == "metrics.jsonl") {
      what += " (" + std::to_string(MetricsLines(path).size()) + " lines)";
    }
    fs::remove(path, error);
    if (error) throw Error(path.string() + ": cannot remove: " + error.message());
    replaced.push_back(what);
  }
  if (replaced.empty()) return;
  std::string list;
  for (const std::string& r : replaced) list += (list.empty() ? "" : ", ") + r;
  log << "bptt train: --force: replaced the run in " << dir_.string() << ": removed " << list << "\n";
}

void RunDirectory::RemoveStaleTemporaries() {
  // ".NAME.tmpPID-N" (WriteFileAtomically) and "corpus.ids.tmpPID" (EncodedCorpus::Build).
  static const std::regex kAtomic(R"(\.(.+)\.tmp([0-9]{1,9})-[0-9]+)");
  static const std::regex kIds(R"(corpus\.ids\.tmp([0-9]{1,9}))");
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir_, error)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = entry.path().filename().string();
    std::smatch m;
    long pid = 0;
    if (std::regex_match(name, m, kAtomic)) {
      bool ours = false;
      for (const char* run_file : kRunFiles) ours = ours || m[1] == run_file;
      if (!ours) continue;
      pid = std::stol(m[2]);
    } else if (std::regex_match(name, m, kIds)) {
      pid = std::stol(m[1]);
    } else {
      continue;
    }
    // The directory is locked: no other run writes here, and a writer that is gone left it.
    if (pid != ::getpid() && !Alive(pid)) fs::remove(entry.path(), error);
  }
}

void RunDirectory::StartMetrics() { WriteAll(dir_ / "metrics.jsonl", ""); }

void RunDirectory::AppendMetrics(const nlohmann::json& line) {
  const fs::path path = dir_ / "metrics.jsonl";
  const std::string text = Line(line);
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(path.string() + ": cannot open for appending: " + ErrnoText());
  const ssize_t written = ::write(fd, text.data(), text.size());
  const int why = errno;
  ::close(fd);
  if (written != static_cast<ssize_t>(text.size()))
    throw Error(path.string() + ": cannot append a line: " + (written < 0 ? std::strerror(why) : "short write"));
}

void RunDirectory::ReplaceLastMetrics(const nlohmann::json& line) {
  const fs::path path = dir_ / "metrics.jsonl";
  auto lines = MetricsLines(path);
  if (!lines.empty() && line.contains("step") && lines.back().first == line["step"].get<int64_t>()) lines.pop_back();
  std::string text;
  for (const auto& [step, kept] : lines) text += kept + "\n";
  WriteAll(path, text + Line(line));
}

void RunDirectory::KeepMetricsThrough(int64_t step) {
  const fs::path path = dir_ / "metrics.jsonl";
  std::string text;
  for (const auto& [at, line] : MetricsLines(path))
    if (at <= step) text += line + "\n";
  if (text != ReadAll(path)) WriteAll(path, text);
}

void RunDirectory::SaveJson(const char* name, const nlohmann::json& json) const {
  WriteAll(dir_ / name, json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
}

std::optional<std::string> RunDirectory::DrawCurves() const {
  try {
    WriteCurves({dir_}, dir_ / "curves.svg");
  } catch (const std::exception& e) {
    return (dir_ / "curves.svg").string() + " not drawn (" + e.what() + "); training goes on";
  }
  return std::nullopt;
}

}  // namespace bptt
