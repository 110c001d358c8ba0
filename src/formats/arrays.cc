#include "formats/arrays.h"

#include <zip.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <memory>
#include <sstream>

#include "bptt/error.h"
#include "bptt/safetensors.h"

namespace bptt::formats {

namespace {

int ElementSize(ElementType t) {
  switch (t) {
    case ElementType::kBool:
    case ElementType::kInt8:
    case ElementType::kUInt8: return 1;
    case ElementType::kInt16:
    case ElementType::kUInt16: return 2;
    case ElementType::kInt32:
    case ElementType::kUInt32:
    case ElementType::kFloat32: return 4;
    case ElementType::kInt64:
    case ElementType::kUInt64:
    case ElementType::kFloat64: return 8;
  }
  return 1;
}

template <typename T>
T Load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Calls f(value as double) for element k of the array's bytes, for each element in order; the
// type is dispatched once for the whole loop.
template <typename F>
void ForEachValue(const Array& a, F&& f) {
  const int64_t n = a.size();
  const uint8_t* p = a.bytes.data();
  const auto loop = [&]<typename T>(T) {
    for (int64_t k = 0; k < n; ++k) f(k, static_cast<double>(Load<T>(p + k * static_cast<int64_t>(sizeof(T)))));
  };
  switch (a.type) {
    case ElementType::kBool:
    case ElementType::kUInt8: loop(uint8_t{}); break;
    case ElementType::kInt8: loop(int8_t{}); break;
    case ElementType::kInt16: loop(int16_t{}); break;
    case ElementType::kUInt16: loop(uint16_t{}); break;
    case ElementType::kInt32: loop(int32_t{}); break;
    case ElementType::kUInt32: loop(uint32_t{}); break;
    case ElementType::kInt64: loop(int64_t{}); break;
    case ElementType::kUInt64: loop(uint64_t{}); break;
    case ElementType::kFloat32: loop(float{}); break;
    case ElementType::kFloat64: loop(double{}); break;
  }
}

// Reverses the bytes of each element (big-endian files).
void SwapBytes(std::vector<uint8_t>& bytes, int size) {
  if (size == 1) return;
  for (size_t k = 0; k + static_cast<size_t>(size) <= bytes.size(); k += static_cast<size_t>(size))
    std::reverse(bytes.begin() + static_cast<std::ptrdiff_t>(k), bytes.begin() + static_cast<std::ptrdiff_t>(k) + size);
}

// The elements of a Fortran-order array rearranged into C order.
std::vector<uint8_t> FortranToC(const std::vector<uint8_t>& bytes, const std::vector<int64_t>& shape, int size) {
  std::vector<uint8_t> out(bytes.size());
  const size_t dims = shape.size();
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<int64_t> index(dims, 0), fortran_stride(dims, 1);
  for (size_t d = 1; d < dims; ++d) fortran_stride[d] = fortran_stride[d - 1] * shape[d - 1];
  for (int64_t k = 0; k < n; ++k) {
    int64_t from = 0;
    for (size_t d = 0; d < dims; ++d) from += index[d] * fortran_stride[d];
    std::memcpy(out.data() + k * size, bytes.data() + from * size, static_cast<size_t>(size));
    for (size_t d = dims; d-- > 0;) {  // the next C-order index: the last dimension fastest
      if (++index[d] < shape[d]) break;
      index[d] = 0;
    }
  }
  return out;
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t d = 0; d < shape.size(); ++d) out += (d ? ", " : "") + std::to_string(shape[d]);
  return out + ")";
}

// The value of `key` in a .npy header (a Python dict literal), as its text.
std::string HeaderValue(const std::string& header, const std::string& key, const std::string& source) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) at = header.find("\"" + key + "\"");
  if (at == std::string::npos) throw Error(source + ": not a .npy file: its header has no " + Quote(key));
  at = header.find(':', at);
  if (at == std::string::npos) throw Error(source + ": not a .npy file: malformed header");
  ++at;
  while (at < header.size() && header[at] == ' ') ++at;
  if (at >= header.size()) throw Error(source + ": not a .npy file: malformed header");
  const char open = header[at];
  size_t end;
  if (open == '\'' || open == '"') {
    end = header.find(open, at + 1);
    if (end == std::string::npos) throw Error(source + ": not a .npy file: malformed header");
    return header.substr(at + 1, end - at - 1);
  }
  if (open == '(') {
    end = header.find(')', at);
    if (end == std::string::npos) throw Error(source + ": not a .npy file: malformed header");
    return header.substr(at, end - at + 1);
  }
  end = header.find_first_of(",}", at);
  if (end == std::string::npos) throw Error(source + ": not a .npy file: malformed header");
  std::string v = header.substr(at, end - at);
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

std::vector<int64_t> ParseShape(const std::string& text, const std::string& source) {
  std::vector<int64_t> shape;
  std::string inner = text.substr(1, text.size() - 2);
  std::stringstream in(inner);
  std::string item;
  while (std::getline(in, item, ',')) {
    item.erase(0, item.find_first_not_of(' '));
    item.erase(item.find_last_not_of(' ') + 1);
    if (item.empty()) continue;
    size_t used = 0;
    int64_t v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 0) throw Error(source + ": not a .npy file: shape " + text + " is malformed");
    shape.push_back(v);
  }
  return shape;
}

ElementType ParseDescr(const std::string& descr, bool& big_endian, const std::string& source) {
  if (descr.size() < 3)
    throw Error(source + ": element type " + Quote(descr) + " is not a number type (bool, integer or float)");
  const char order = descr[0], kind = descr[1];
  const std::string width = descr.substr(2);
  big_endian = order == '>';
  if (order != '<' && order != '>' && order != '|' && order != '=')
    throw Error(source + ": element type " + Quote(descr) + " has an unknown byte order");
  const std::string code = std::string(1, kind) + width;
  static const std::pair<const char*, ElementType> kTypes[] = {
      {"b1", ElementType::kBool},    {"i1", ElementType::kInt8},     {"u1", ElementType::kUInt8},
      {"i2", ElementType::kInt16},   {"u2", ElementType::kUInt16},   {"i4", ElementType::kInt32},
      {"u4", ElementType::kUInt32},  {"i8", ElementType::kInt64},    {"u8", ElementType::kUInt64},
      {"f4", ElementType::kFloat32}, {"f8", ElementType::kFloat64},
  };
  for (const auto& [name, type] : kTypes)
    if (code == name) return type;
  throw Error(source + ": element type " + Quote(descr) +
              " is not one bptt reads (bool, int8..int64, uint8..uint64, float32, float64)");
}

// A zip archive open for reading, closed on destruction.
struct Zip {
  explicit Zip(const std::filesystem::path& path) : path_(path.string()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec)) throw Error(path_ + ": no such file");
    int code = 0;
    zip_ = zip_open(path_.c_str(), ZIP_RDONLY, &code);
    if (zip_ == nullptr) {
      zip_error_t error;
      zip_error_init_with_code(&error, code);
      const std::string what = zip_error_strerror(&error);
      zip_error_fini(&error);
      throw Error(path_ + ": cannot read it as an .npz (zip) archive: " + what);
    }
  }
  ~Zip() { zip_discard(zip_); }
  Zip(const Zip&) = delete;
  Zip& operator=(const Zip&) = delete;

  std::string path_;
  zip_t* zip_;
};

}  // namespace

int64_t Array::size() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

double Array::At(int64_t k) const {
  const uint8_t* p = bytes.data() + k * ElementSize(type);
  switch (type) {
    case ElementType::kBool:
    case ElementType::kUInt8: return *p;
    case ElementType::kInt8: return Load<int8_t>(p);
    case ElementType::kInt16: return Load<int16_t>(p);
    case ElementType::kUInt16: return Load<uint16_t>(p);
    case ElementType::kInt32: return Load<int32_t>(p);
    case ElementType::kUInt32: return Load<uint32_t>(p);
    case ElementType::kInt64: return static_cast<double>(Load<int64_t>(p));
    case ElementType::kUInt64: return static_cast<double>(Load<uint64_t>(p));
    case ElementType::kFloat32: return Load<float>(p);
    case ElementType::kFloat64: return Load<double>(p);
  }
  return 0;
}

std::string Array::Index(int64_t k) const {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    index[d] = shape[d] > 0 ? k % shape[d] : 0;
    k = shape[d] > 0 ? k / shape[d] : 0;
  }
  std::string out = "(";
  for (size_t d = 0; d < index.size(); ++d) out += (d ? ", " : "") + std::to_string(index[d]);
  return out + ")";
}

std::vector<float> Array::Floats(bool finite) const {
  std::vector<float> out(static_cast<size_t>(size()));
  int64_t bad = -1;
  ForEachValue(*this, [&](int64_t k, double v) {
    out[static_cast<size_t>(k)] = static_cast<float>(v);
    if (finite && bad < 0 && !std::isfinite(out[static_cast<size_t>(k)])) bad = k;
  });
  if (bad >= 0) {
    const double v = At(bad);
    throw Error(source + ": " + (std::isnan(v) ? std::string("NaN") : std::isinf(v) ? "an infinity" : "a value too large for float32") +
                " at element " + Index(bad));
  }
  return out;
}

std::vector<int64_t> Array::Integers() const {
  std::vector<int64_t> out(static_cast<size_t>(size()));
  if (type == ElementType::kInt64) {
    std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
  if (type == ElementType::kUInt64) {
    for (int64_t k = 0; k < size(); ++k) {
      const auto v = Load<uint64_t>(bytes.data() + 8 * k);
      if (v > static_cast<uint64_t>(INT64_MAX)) throw Error(source + ": value " + std::to_string(v) + " at element " + Index(k) + " is too large");
      out[static_cast<size_t>(k)] = static_cast<int64_t>(v);
    }
    return out;
  }
  int64_t bad = -1;
  ForEachValue(*this, [&](int64_t k, double v) {
    if (bad < 0 && (!(std::abs(v) < 9.0e15) || v != std::floor(v))) bad = k;
    out[static_cast<size_t>(k)] = bad < 0 ? static_cast<int64_t>(v) : 0;
  });
  if (bad >= 0) {
    std::ostringstream v;
    v << At(bad);
    throw Error(source + ": " + v.str() + " at element " + Index(bad) + " is not an integer");
  }
  return out;
}

std::vector<uint8_t> ReadFileBytes(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) throw Error(path.string() + ": no such file");
  gzFile in = gzopen(path.c_str(), "rb");
  if (in == nullptr) throw Error(path.string() + ": cannot open");
  gzbuffer(in, 1 << 17);
  std::vector<uint8_t> bytes;
  size_t have = 0;
  while (true) {
    bytes.resize(std::max<size_t>(have * 2, 1 << 20));
    const size_t want = std::min<size_t>(bytes.size() - have, 1u << 30);
    const int got = gzread(in, bytes.data() + have, static_cast<unsigned>(want));
    if (got < 0) {
      int code = 0;
      const std::string what = gzerror(in, &code);
      gzclose(in);
      throw Error(path.string() + ": read error: " + what);
    }
    have += static_cast<size_t>(got);
    if (got == 0) break;
  }
  gzclose(in);
  bytes.resize(have);
  return bytes;
}

Array ParseNpy(std::span<const uint8_t> bytes, const std::string& source) {
  static constexpr uint8_t kMagic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (bytes.size() < 10 || !std::equal(std::begin(kMagic), std::end(kMagic), bytes.begin()))
    throw Error(source + ": not a .npy file (no \\x93NUMPY magic)");
  const int major = bytes[6];
  size_t header_length, offset;
  if (major == 1) {
    header_length = bytes[8] | (static_cast<size_t>(bytes[9]) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw Error(source + ": not a .npy file: truncated header");
    header_length = bytes[8] | (static_cast<size_t>(bytes[9]) << 8) | (static_cast<size_t>(bytes[10]) << 16) |
                    (static_cast<size_t>(bytes[11]) << 24);
    offset = 12;
  } else {
    throw Error(source + ": .npy format version " + std::to_string(major) + " is not one bptt reads (1, 2, 3)");
  }
  if (offset + header_length > bytes.size()) throw Error(source + ": not a .npy file: truncated header");
  const std::string header(reinterpret_cast<const char*>(bytes.data() + offset), header_length);
  Array a;
  a.source = source;
  bool big_endian = false;
  a.type = ParseDescr(HeaderValue(header, "descr", source), big_endian, source);
  const std::string fortran = HeaderValue(header, "fortran_order", source);
  if (fortran != "True" && fortran != "False") throw Error(source + ": not a .npy file: fortran_order is " + fortran);
  const std::string shape = HeaderValue(header, "shape", source);
  if (shape.empty() || shape.front() != '(') throw Error(source + ": not a .npy file: shape is " + shape);
  a.shape = ParseShape(shape, source);
  const int size = ElementSize(a.type);
  double expected = size;
  for (int64_t s : a.shape) expected *= static_cast<double>(s);
  const size_t data = offset + header_length;
  if (expected > static_cast<double>(bytes.size() - data))
    throw Error(source + ": truncated: shape " + shape + " needs " + std::to_string(static_cast<uint64_t>(expected)) +
                " bytes of data, the file has " + std::to_string(bytes.size() - data));
  a.bytes.assign(bytes.begin() + static_cast<std::ptrdiff_t>(data),
                 bytes.begin() + static_cast<std::ptrdiff_t>(data) + static_cast<std::ptrdiff_t>(expected));
  if (big_endian) SwapBytes(a.bytes, size);
  if (fortran == "True" && a.shape.size() > 1) a.bytes = FortranToC(a.bytes, a.shape, size);
  return a;
}

Array ReadNpy(const std::filesystem::path& path) { return ParseNpy(ReadFileBytes(path), path.string()); }

std::vector<std::string> NpzMembers(const std::filesystem::path& path) {
  Zip zip(path);
  std::vector<std::string> names;
  const zip_int64_t n = zip_get_num_entries(zip.zip_, 0);
  for (zip_int64_t i = 0; i < n; ++i) {
    std::string name = zip_get_name(zip.zip_, static_cast<zip_uint64_t>(i), 0);
    if (name.ends_with(".npy")) name.resize(name.size() - 4);
    names.push_back(name);
  }
  return names;
}

Array ReadNpzMember(const std::filesystem::path& path, const std::string& name) {
  Zip zip(path);
  const std::string source = path.string() + ": member '" + name + "'";
  zip_int64_t index = zip_name_locate(zip.zip_, (name + ".npy").c_str(), 0);
  if (index < 0) index = zip_name_locate(zip.zip_, name.c_str(), 0);
  if (index < 0) {
    std::string have;
    const zip_int64_t n = zip_get_num_entries(zip.zip_, 0);
    for (zip_int64_t i = 0; i < n; ++i) {
      std::string member = zip_get_name(zip.zip_, static_cast<zip_uint64_t>(i), 0);
      if (member.ends_with(".npy")) member.resize(member.size() - 4);
      have += (have.empty() ? "" : ", ") + member;
    }
    throw Error(path.string() + ": has no array '" + name + "' (it has " + (have.empty() ? "none" : have) + ")");
  }
  zip_stat_t stat;
  if (zip_stat_index(zip.zip_, static_cast<zip_uint64_t>(index), 0, &stat) != 0 || !(stat.valid & ZIP_STAT_SIZE))
    throw Error(source + ": cannot read its size: " + zip_strerror(zip.zip_));
  std::unique_ptr<zip_file_t, int (*)(zip_file_t*)> file(zip_fopen_index(zip.zip_, static_cast<zip_uint64_t>(index), 0),
                                                          zip_fclose);
  if (!file) throw Error(source + ": cannot open: " + zip_strerror(zip.zip_));
  std::vector<uint8_t> bytes(stat.size);
  zip_uint64_t have = 0;
  while (have < stat.size) {
    const zip_int64_t got = zip_fread(file.get(), bytes.data() + have, stat.size - have);
    if (got < 0) throw Error(source + ": read error: " + zip_file_strerror(file.get()));
    if (got == 0) throw Error(source + ": truncated");
    have += static_cast<zip_uint64_t>(got);
  }
  return ParseNpy(bytes, source);
}

Array ReadIdx(const std::filesystem::path& path) {
  const std::vector<uint8_t> bytes = ReadFileBytes(path);
  const std::string source = path.string();
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0)
    throw Error(source + ": not an IDX file (its first two bytes must be 0)");
  Array a;
  a.source = source;
  switch (bytes[2]) {
    case 0x08: a.type = ElementType::kUInt8; break;
    case 0x09: a.type = ElementType::kInt8; break;
    case 0x0B: a.type = ElementType::kInt16; break;
    case 0x0C: a.type = ElementType::kInt32; break;
    case 0x0D: a.type = ElementType::kFloat32; break;
    case 0x0E: a.type = ElementType::kFloat64; break;
    default: throw Error(source + ": not an IDX file: element type code " + std::to_string(bytes[2]) + " is unknown");
  }
  const int dims = bytes[3];
  if (dims < 1) throw Error(source + ": IDX file with no dimensions");
  const size_t header = 4 + 4 * static_cast<size_t>(dims);
  if (bytes.size() < header) throw Error(source + ": truncated IDX header");
  double expected = ElementSize(a.type);
  for (int d = 0; d < dims; ++d) {
    const uint8_t* p = bytes.data() + 4 + 4 * d;
    const uint32_t s = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    a.shape.push_back(s);
    expected *= s;
  }
  if (expected != static_cast<double>(bytes.size() - header))
    throw Error(source + ": IDX file of shape " + ShapeText(a.shape) + " needs " +
                std::to_string(static_cast<uint64_t>(expected)) + " bytes of data, it has " +
                std::to_string(bytes.size() - header));
  a.bytes.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  SwapBytes(a.bytes, ElementSize(a.type));  // IDX is big-endian
  return a;
}

namespace {

void WriteNpyBytes(const std::filesystem::path& path, std::span<const int64_t> shape, const char* descr,
                   const uint8_t* data, size_t data_bytes) {
  std::string dims;
  for (int64_t s : shape) dims += std::to_string(s) + ", ";
  if (shape.size() > 1) dims.resize(dims.size() - 2);
  std::string header = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic, version, length, header padded with spaces to a multiple of 64 bytes, newline.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(header.size() & 0xff),
                              static_cast<uint8_t>(header.size() >> 8)};
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data, data + data_bytes);
  WriteFileAtomically(path, out);
}

}  // namespace

void WriteNpy(const std::filesystem::path& path, std::span<const int64_t> shape, std::span<const float> values) {
  static_assert(std::endian::native == std::endian::little);
  WriteNpyBytes(path, shape, "<f4", reinterpret_cast<const uint8_t*>(values.data()), values.size_bytes());
}

void WriteNpy(const std::filesystem::path& path, std::span<const int64_t> shape, std::span<const int64_t> values) {
  WriteNpyBytes(path, shape, "<i8", reinterpret_cast<const uint8_t*>(values.data()), values.size_bytes());
}

FileFormat FormatOf(const std::filesystem::path& path) {
  std::string name = path.filename().string();
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  if (name.ends_with(".gz")) name.resize(name.size() - 3);
  if (name.ends_with(".npy")) return FileFormat::kNpy;
  if (name.ends_with(".npz")) return FileFormat::kNpz;
  if (name.ends_with(".csv")) return FileFormat::kCsv;
  if (name.find("idx") != std::string::npos || name.ends_with("-ubyte") || name.ends_with(".idx"))
    return FileFormat::kIdx;
  throw Error(path.string() + ": unknown data format: name it .npy, .npz, .csv or an IDX file (*-idx3-ubyte, "
              "*.idx; each may be gzipped, .gz)");
}

}  // namespace bptt::formats
