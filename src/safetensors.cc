#include "bptt/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libdeflate.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <memory>
#include <set>
#include <tuple>
#include <type_traits>

#include "bptt/error.h"
#include "utf8.h"

namespace bptt {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian and bptt copies it as it is");

namespace {

using Json = nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Nesting in a valid header: the root object, a tensor entry or __metadata__, a shape array.
constexpr size_t kMaxHeaderDepth = 3;
constexpr size_t kMaxRank = 64;
constexpr std::string_view kMetadataKey = "__metadata__";
constexpr std::string_view kChecksumKey = "checksum";
constexpr std::string_view kChecksumPrefix = "crc32:";
constexpr size_t kChecksumDigits = 8;
constexpr size_t kMaxNameInMessage = 80;

constexpr std::pair<DType, std::string_view> kDTypeNames[] = {
    {DType::kF32, "F32"}, {DType::kF64, "F64"}, {DType::kI32, "I32"}, {DType::kI64, "I64"},
    {DType::kU8, "U8"},   {DType::kU16, "U16"}, {DType::kU32, "U32"}, {DType::kU64, "U64"}};

template <typename T>
constexpr DType DTypeOf() {
  if constexpr (std::is_same_v<T, float>) return DType::kF32;
  else if constexpr (std::is_same_v<T, double>) return DType::kF64;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::kI32;
  else if constexpr (std::is_same_v<T, int64_t>) return DType::kI64;
  else if constexpr (std::is_same_v<T, uint8_t>) return DType::kU8;
  else if constexpr (std::is_same_v<T, uint16_t>) return DType::kU16;
  else if constexpr (std::is_same_v<T, uint32_t>) return DType::kU32;
  else static_assert(std::is_same_v<T, uint64_t>, "no safetensors dtype for this type");
  return DType::kU64;
}

// 'name' for a one-line message: control characters escaped, long names cut short.
std::string Quote(std::string_view name) {
  std::string out = "'";
  size_t cut = name.size();
  if (cut > kMaxNameInMessage) {
    cut = kMaxNameInMessage;
    while (cut > 0 && (static_cast<uint8_t>(name[cut]) & 0xC0) == 0x80) --cut;  // UTF-8 boundary
  }
  for (char c : name.substr(0, cut)) {
    const auto u = static_cast<uint8_t>(c);
    if (u < 0x20 || u == 0x7F) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    } else {
      out += c;
    }
  }
  if (cut < name.size()) out += "...";
  return out + "'";
}

// A parser's message made printable ASCII, since it may quote the bytes it stopped at.
std::string OneLine(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (static_cast<uint8_t>(c) < 0x20 || static_cast<uint8_t>(c) >= 0x7F) c = '?';
  return out;
}

std::string ShapeText(std::span<const int64_t> shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Number of elements, or false when a dim is negative or the byte count overflows int64.
bool ElementCount(std::span<const int64_t> shape, size_t element_size, uint64_t* count) {
  uint64_t n = 1;
  for (int64_t dim : shape) {
    if (dim < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(dim), &n)) return false;
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(n, element_size, &bytes) || bytes > uint64_t{INT64_MAX}) return false;
  *count = n;
  return true;
}

uint32_t Crc32(uint32_t crc, std::span<const uint8_t> bytes) {
  return libdeflate_crc32(crc, bytes.data(), bytes.size());  // zlib's crc32, several times faster
}

std::string ChecksumText(uint32_t crc) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(kChecksumPrefix);
  for (int shift = 28; shift >= 0; shift -= 4) out += kHex[(crc >> shift) & 15];
  return out;
}

bool IsChecksumText(std::string_view value) {
  if (value.size() != kChecksumPrefix.size() + kChecksumDigits) return false;
  if (!value.starts_with(kChecksumPrefix)) return false;
  return std::all_of(value.begin() + kChecksumPrefix.size(), value.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// How the checksum entry appears in a compact header: "checksum":"crc32:xxxxxxxx".
std::string ChecksumEntryText(std::string_view value) {
  std::string out = "\"";
  out.append(kChecksumKey).append("\":\"").append(value).append("\"");
  return out;
}

// crc32 of the whole file with the 8 digits at digits_at (an offset into file) read as '0'.
uint32_t FileChecksum(std::span<const uint8_t> file, size_t digits_at) {
  static constexpr uint8_t kZeros[kChecksumDigits] = {'0', '0', '0', '0', '0', '0', '0', '0'};
  uint32_t crc = Crc32(0, file.first(digits_at));
  crc = Crc32(crc, kZeros);
  return Crc32(crc, file.subspan(digits_at + kChecksumDigits));
}

// Parses the JSON header, refusing duplicate keys, nesting deeper than a valid header has, and
// arrays longer than kMaxRank, so hostile headers cannot build huge or deep documents.
Json ParseHeaderJson(std::string_view text, const std::string& where) {
  struct Frame {
    bool is_array;
    size_t elements;
    std::set<std::string> keys;
  };
  std::vector<Frame> frames;
  auto count_element = [&] {
    if (!frames.empty() && frames.back().is_array && ++frames.back().elements > kMaxRank)
      throw Error(where + " has an array longer than " + std::to_string(kMaxRank));
  };
  auto callback = [&](int /*depth*/, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        count_element();
        if (frames.size() == kMaxHeaderDepth)
          throw Error(where + " nests deeper than " + std::to_string(kMaxHeaderDepth) + " levels");
        frames.push_back({event == Json::parse_event_t::array_start, 0, {}});
        break;
      case Json::parse_event_t::object_end:
      case Json::parse_event_t::array_end:
        frames.pop_back();
        break;
      case Json::parse_event_t::key:
        if (!frames.back().keys.insert(parsed.get<std::string>()).second)
          throw Error(where + " repeats the key " + Quote(parsed.get<std::string>()));
        break;
      case Json::parse_event_t::value:
        count_element();
        break;
    }
    return true;
  };
  try {
    return Json::parse(text.begin(), text.end(), callback);
  } catch (const Json::exception& e) {
    throw Error(where + " is not valid JSON: " + OneLine(e.what()));
  }
}

// A JSON integer in [0, 2^64), stored in *out.
bool ToUnsigned(const Json& value, uint64_t* out) {
  if (!value.is_number_unsigned()) return false;
  *out = value.get<uint64_t>();
  return true;
}

struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

// Validates one tensor's header entry against a data buffer of data_size bytes.
Entry ParseEntry(const std::string& name, const Json& value, uint64_t data_size,
                 const std::string& where) {
  const std::string tensor = where + " tensor " + Quote(name);
  if (!value.is_object()) throw Error(tensor + " is not an object");
  for (const auto& [key, field] : value.items()) {
    if (key != "dtype" && key != "shape" && key != "data_offsets")
      throw Error(tensor + " has unknown field " + Quote(key));
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(key)) throw Error(tensor + " has no " + key);
  }
  Entry entry{name, DType::kF32, {}, 0, 0};

  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) throw Error(tensor + " dtype is not a string");
  const auto& dtype_name = dtype.get_ref<const std::string&>();
  const auto* known = std::find_if(std::begin(kDTypeNames), std::end(kDTypeNames),
                                   [&](const auto& pair) { return pair.second == dtype_name; });
  if (known == std::end(kDTypeNames))
    throw Error(tensor + " has unsupported dtype " + Quote(dtype_name));
  entry.dtype = known->first;

  const Json& shape = value["shape"];
  if (!shape.is_array()) throw Error(tensor + " shape is not an array");
  for (const Json& dim : shape) {
    uint64_t d;
    if (!ToUnsigned(dim, &d) || d > uint64_t{INT64_MAX})
      throw Error(tensor + " shape has a dim that is not a non-negative integer");
    entry.shape.push_back(static_cast<int64_t>(d));
  }
  uint64_t count;
  if (!ElementCount(entry.shape, DTypeSize(entry.dtype), &count))
    throw Error(tensor + " shape " + ShapeText(entry.shape) + " is too large");

  const Json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !ToUnsigned(offsets[0], &entry.begin) ||
      !ToUnsigned(offsets[1], &entry.end))
    throw Error(tensor + " data_offsets is not two non-negative integers");
  if (entry.end < entry.begin) throw Error(tensor + " data_offsets end before they begin");
  if (entry.end > data_size)
    throw Error(tensor + " data_offsets end at " + std::to_string(entry.end) +
                ", past the data buffer of " + std::to_string(data_size) + " bytes");
  if (entry.end - entry.begin != count * DTypeSize(entry.dtype))
    throw Error(tensor + " spans " + std::to_string(entry.end - entry.begin) + " bytes but " +
                std::string(dtype_name) + " " + ShapeText(entry.shape) + " needs " +
                std::to_string(count * DTypeSize(entry.dtype)));
  return entry;
}

// Verifies the checksum when the metadata claims one and removes it from `metadata`; says
// whether there was one.
bool VerifyChecksum(std::map<std::string, std::string>& metadata, std::span<const uint8_t> file,
                    std::string_view header, const std::string& where) {
  bool claimed = false;
  for (const auto& [key, value] : metadata) {
    if (key != kChecksumKey && value.starts_with(kChecksumPrefix))
      throw Error(where + " metadata " + Quote(key) + " holds a crc32 value; only " +
                  Quote(kChecksumKey) + " may");
    claimed |= key == kChecksumKey;
  }
  if (!claimed) return false;
  const std::string& value = metadata[std::string(kChecksumKey)];
  if (!IsChecksumText(value))
    throw Error(where + " checksum " + Quote(value) + " is not crc32: and 8 lowercase hex digits");
  // Only a real "checksum" key with a string value can produce this text unescaped, and the
  // key is unique, so a second match means the header is not in bptt's compact form.
  const std::string entry = ChecksumEntryText(value);
  const size_t at = header.find(entry);
  if (at == std::string_view::npos || header.find(entry, at + 1) != std::string_view::npos)
    throw Error(where + " checksum is not written as " + entry);
  const size_t digits_at = 8 + at + entry.size() - 1 - kChecksumDigits;
  const std::string actual = ChecksumText(FileChecksum(file, digits_at));
  if (actual != value)
    throw Error(where + " checksum mismatch: the file says " + value + ", its bytes give " +
                actual);
  metadata.erase(std::string(kChecksumKey));
  return true;
}

}  // namespace

// Writes `bytes` to a temporary file beside `path`, fsyncs it and renames it over `path`.
void WriteFileAtomically(const std::filesystem::path& path, std::span<const uint8_t> bytes) {
  static std::atomic<uint64_t> counter{0};
  const std::string target = path.string();
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : ".";
  std::string temp;
  int fd = -1;
  for (int attempt = 0; fd < 0; ++attempt) {
    std::string name = ".";
    name.append(path.filename().string()).append(".tmp").append(std::to_string(getpid()));
    name.append("-").append(std::to_string(counter++));
    temp = (dir / name).string();
    fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && (errno != EEXIST || attempt == 100))
      throw Error(target + ": cannot create temporary file " + temp + ": " + std::strerror(errno));
  }
  auto fail = [&](const std::string& what) {
    const int error = errno;
    if (fd >= 0) close(fd);
    unlink(temp.c_str());
    throw Error(target + ": " + what + ": " + std::strerror(error));
  };
  size_t done = 0;
  while (done < bytes.size()) {
    const size_t chunk = std::min<size_t>(bytes.size() - done, 1 << 30);
    const ssize_t n = write(fd, bytes.data() + done, chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write to " + temp + " failed");
    if (n == 0) {
      errno = ENOSPC;
      fail("write to " + temp + " wrote nothing");
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) fail("fsync of " + temp + " failed");
  const int closed = close(fd);
  fd = -1;
  if (closed != 0) fail("close of " + temp + " failed");
  if (rename(temp.c_str(), target.c_str()) != 0) fail("cannot rename " + temp + " over it");

  // The new file is in place; syncing the directory makes the rename itself durable. EINVAL
  // means the file system does not sync directories.
  const int dir_fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0 || (fsync(dir_fd) != 0 && errno != EINVAL)) {
    const int error = errno;
    if (dir_fd >= 0) close(dir_fd);
    throw Error(target + ": written, but fsync of directory " + dir.string() +
                " failed: " + std::strerror(error));
  }
  close(dir_fd);
}

std::string_view DTypeName(DType dtype) {
  for (const auto& [type, name] : kDTypeNames)
    if (type == dtype) return name;
  return "?";
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64:
    case DType::kU64: return 8;
    case DType::kF32:
    case DType::kI32:
    case DType::kU32: return 4;
    case DType::kU16: return 2;
    case DType::kU8: return 1;
  }
  return 0;
}

template <typename T>
void Safetensors::PutValues(const std::string& name, std::vector<int64_t> shape,
                            std::span<const T> values) {
  const std::string tensor = source_ + ": tensor " + Quote(name);
  if (name == kMetadataKey) throw Error(tensor + " uses the name reserved for metadata");
  if (!IsValidUtf8(name)) throw Error(tensor + " name is not valid UTF-8");
  uint64_t count;
  if (!ElementCount(shape, sizeof(T), &count))
    throw Error(tensor + " shape " + ShapeText(shape) + " has a negative dim or is too large");
  if (count != values.size())
    throw Error(tensor + " shape " + ShapeText(shape) + " needs " + std::to_string(count) +
                " values, got " + std::to_string(values.size()));
  const auto* begin = reinterpret_cast<const uint8_t*>(values.data());
  tensors_[name] = Tensor{DTypeOf<T>(), std::move(shape), {begin, begin + values.size_bytes()}};
}

void Safetensors::Put(const std::string& name, std::vector<int64_t> shape,
                      std::span<const float> values) {
  PutValues(name, std::move(shape), values);
}
void Safetensors::Put(const std::string& name, std::vector<int64_t> shape,
                      std::span<const double> values) {
  PutValues(name, std::move(shape), values);
}
void Safetensors::Put(const std::string& name, std::vector<int64_t> shape,
                      std::span<const int32_t> values) {
  PutValues(name, std::move(shape), values);
}
void Safetensors::Put(const std::string& name, std::vector<int64_t> shape,
                      std::span<const int64_t> values) {
  PutValues(name, std::move(shape), values);
}
void Safetensors::Put(const std::string& name, std::vector<int64_t> shape,
                      std::span<const uint8_t> values) {
  PutValues(name, std::move(shape), values);
}
void Safetensors::Put(const std::string& name, std::vector<int64_t> shape,
                      std::span<const uint16_t> values) {
  PutValues(name, std::move(shape), values);
}
void Safetensors::Put(const std::string& name, std::vector<int64_t> shape,
                      std::span<const uint32_t> values) {
  PutValues(name, std::move(shape), values);
}
void Safetensors::Put(const std::string& name, std::vector<int64_t> shape,
                      std::span<const uint64_t> values) {
  PutValues(name, std::move(shape), values);
}

template <typename T>
std::vector<T> Safetensors::Get(const std::string& name,
                                const std::vector<int64_t>& expected_shape) const {
  const Tensor& tensor = Checked<T>(name, expected_shape);
  const std::span<const uint8_t> bytes = tensor.data();
  std::vector<T> values(bytes.size() / sizeof(T));
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

template <typename T>
const Safetensors::Tensor& Safetensors::Checked(const std::string& name,
                                                const std::vector<int64_t>& expected_shape) const {
  const Tensor* tensor = Find(name);
  if (tensor == nullptr) throw Error(source_ + ": tensor " + Quote(name) + " is missing");
  if (tensor->dtype != DTypeOf<T>())
    throw Error(source_ + ": tensor " + Quote(name) + " has dtype " +
                std::string(DTypeName(tensor->dtype)) + ", expected " +
                std::string(DTypeName(DTypeOf<T>())));
  if (tensor->shape != expected_shape)
    throw Error(source_ + ": tensor " + Quote(name) + " has shape " + ShapeText(tensor->shape) +
                ", expected " + ShapeText(expected_shape));
  return *tensor;
}

template const Safetensors::Tensor& Safetensors::Checked<float>(const std::string&,
                                                                 const std::vector<int64_t>&) const;
template std::vector<float> Safetensors::Get(const std::string&, const std::vector<int64_t>&) const;
template std::vector<double> Safetensors::Get(const std::string&,
                                              const std::vector<int64_t>&) const;
template std::vector<int32_t> Safetensors::Get(const std::string&,
                                               const std::vector<int64_t>&) const;
template std::vector<int64_t> Safetensors::Get(const std::string&,
                                               const std::vector<int64_t>&) const;
template std::vector<uint8_t> Safetensors::Get(const std::string&,
                                               const std::vector<int64_t>&) const;
template std::vector<uint16_t> Safetensors::Get(const std::string&,
                                                const std::vector<int64_t>&) const;
template std::vector<uint32_t> Safetensors::Get(const std::string&,
                                                const std::vector<int64_t>&) const;
template std::vector<uint64_t> Safetensors::Get(const std::string&,
                                                const std::vector<int64_t>&) const;

const Safetensors::Tensor* Safetensors::Find(const std::string& name) const {
  const auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

std::vector<std::string> Safetensors::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : tensors_) names.push_back(name);
  return names;
}

uint64_t Safetensors::DataBytes() const {
  uint64_t bytes = unkept_bytes_;
  for (const auto& [name, tensor] : tensors_) bytes += tensor.data().size();
  return bytes;
}

void Safetensors::SetMetadata(const std::string& key, std::string value) {
  const std::string entry = source_ + ": metadata " + Quote(key);
  if (key == kChecksumKey) throw Error(entry + " is reserved for the checksum Save writes");
  if (value.starts_with(kChecksumPrefix))
    throw Error(entry + " value begins " + Quote(kChecksumPrefix) + ", reserved for checksums");
  if (!IsValidUtf8(key) || !IsValidUtf8(value)) throw Error(entry + " is not valid UTF-8");
  metadata_[key] = std::move(value);
}

std::vector<uint8_t> Safetensors::Serialize() const {
  // The checksum is written as zeros first; nlohmann::json sorts object keys, so the text is
  // the same for the same content.
  Json metadata(metadata_);
  metadata[std::string(kChecksumKey)] = ChecksumText(0);
  Json header = Json::object();
  header[std::string(kMetadataKey)] = std::move(metadata);
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors_) {
    const uint64_t end = offset + tensor.data().size();
    header[name] = Json{{"dtype", DTypeName(tensor.dtype)},
                        {"shape", tensor.shape},
                        {"data_offsets", Json::array({offset, end})}};
    offset = end;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<uint8_t> file(8 + text.size() + offset);
  const uint64_t header_size = text.size();
  std::memcpy(file.data(), &header_size, 8);
  std::memcpy(file.data() + 8, text.data(), text.size());
  uint8_t* data = file.data() + 8 + text.size();
  for (const auto& [name, tensor] : tensors_) {
    const std::span<const uint8_t> bytes = tensor.data();
    if (!bytes.empty()) std::memcpy(data, bytes.data(), bytes.size());
    data += bytes.size();
  }

  const std::string entry = ChecksumEntryText(ChecksumText(0));
  const size_t digits_at = 8 + text.find(entry) + entry.size() - 1 - kChecksumDigits;
  const std::string checksum = ChecksumText(FileChecksum(file, digits_at));
  std::memcpy(file.data() + digits_at, checksum.data() + kChecksumPrefix.size(), kChecksumDigits);
  return file;
}

Safetensors Safetensors::Parse(std::span<const uint8_t> bytes, std::string_view name_for_errors, const Keep& keep) {
  return ParseIn(bytes, name_for_errors, keep, nullptr);
}

Safetensors Safetensors::ParseIn(std::span<const uint8_t> bytes, std::string_view name_for_errors, const Keep& keep,
                                 std::shared_ptr<const void> mapping) {
  const std::string file = std::string(name_for_errors) + ": safetensors file";
  const std::string where = std::string(name_for_errors) + ": safetensors header";
  if (bytes.size() < 8)
    throw Error(file + " is " + std::to_string(bytes.size()) +
                " bytes, too short for the 8-byte header length");
  uint64_t header_size;
  std::memcpy(&header_size, bytes.data(), 8);
  if (header_size > kMaxHeaderBytes)
    throw Error(where + " length " + std::to_string(header_size) + " exceeds the limit of " +
                std::to_string(kMaxHeaderBytes) + " bytes");
  if (header_size > bytes.size() - 8)
    throw Error(where + " length " + std::to_string(header_size) + " exceeds the " +
                std::to_string(bytes.size() - 8) + " bytes after it");
  const std::string_view header(reinterpret_cast<const char*>(bytes.data()) + 8, header_size);
  const std::span<const uint8_t> data = bytes.subspan(8 + header_size);
  if (header.empty() || header.front() != '{') throw Error(where + " does not start with '{'");
  const Json json = ParseHeaderJson(header, where);
  if (!json.is_object()) throw Error(where + " is not a JSON object");

  Safetensors st;
  st.source_ = std::string(name_for_errors);
  if (const auto it = json.find(kMetadataKey); it != json.end()) {
    if (!it->is_object()) throw Error(where + " __metadata__ is not an object");
    for (const auto& [key, value] : it->items()) {
      if (!value.is_string())
        throw Error(where + " __metadata__ value " + Quote(key) + " is not a string");
      st.metadata_[key] = value.get<std::string>();
    }
  }
  st.checksum_verified_ = VerifyChecksum(st.metadata_, bytes, header, where);

  std::vector<Entry> entries;
  for (const auto& [name, value] : json.items()) {
    if (name != kMetadataKey) entries.push_back(ParseEntry(name, value, data.size(), where));
  }
  // The tensors must tile the data buffer: no overlaps, no holes, nothing after the last.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& entry : entries) {
    if (entry.begin < covered)
      throw Error(where + " tensor " + Quote(entry.name) + " overlaps tensor " +
                  Quote(previous->name));
    if (entry.begin > covered)
      throw Error(where + " leaves data bytes [" + std::to_string(covered) + ", " +
                  std::to_string(entry.begin) + ") unused");
    covered = entry.end;
    previous = &entry;
  }
  if (covered != data.size())
    throw Error(where + " leaves data bytes [" + std::to_string(covered) + ", " +
                std::to_string(data.size()) + ") unused");

  for (Entry& entry : entries) {
    if (keep && !keep(entry.name)) {
      st.unkept_bytes_ += entry.end - entry.begin;
      continue;
    }
    const auto* begin = data.data() + entry.begin;
    const auto size = static_cast<size_t>(entry.end - entry.begin);
    if (mapping && size > 0) {
      st.tensors_[entry.name] = Tensor{entry.dtype, std::move(entry.shape), {}, {begin, size}};
      st.mapping_ = mapping;
    } else {
      st.tensors_[entry.name] = Tensor{entry.dtype, std::move(entry.shape), {begin, begin + size}};
    }
  }
  return st;
}

void Safetensors::Save(const std::filesystem::path& path) const {
  WriteFileAtomically(path, Serialize());
}

Safetensors Safetensors::Load(const std::filesystem::path& path, const Keep& keep) {
  const std::string name = path.string();
  const int fd = open(name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(name + ": cannot open: " + std::strerror(errno));
  struct stat st;
  const bool stated = fstat(fd, &st) == 0;
  const int stat_error = errno;
  if (!stated || !S_ISREG(st.st_mode)) {
    close(fd);
    throw Error(name + (stated ? ": not a regular file" : ": cannot stat: " + std::string(std::strerror(stat_error))));
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    close(fd);
    return Parse({}, name, keep);
  }
  // The mapping is read once, front to back (the checksum), then in the kept tensors' ranges.
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  const int map_error = errno;
  close(fd);
  if (map == MAP_FAILED) throw Error(name + ": cannot map: " + std::strerror(map_error));
  const std::shared_ptr<const void> mapping(map, [size](const void* p) { munmap(const_cast<void*>(p), size); });
  return ParseIn({static_cast<const uint8_t*>(map), size}, name, keep, mapping);
}

}  // namespace bptt
