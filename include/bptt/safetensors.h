// Safetensors: the file format bptt stores parameters and training state in.
//
// A Safetensors object is an in-memory set of named tensors plus string metadata, and owns a
// copy of every tensor's bytes. Save writes it atomically as a safetensors file
// (https://github.com/huggingface/safetensors) that Python safetensors, NumPy and PyTorch read
// with no bptt code; Load reads a file written by bptt or by any other tool and validates all
// of it before returning.
//
//   st.Put("w", {H, E}, w_values); st.Save(path); Safetensors::Load(path).Get<float>("w", {H, E});
//
// File layout:
//   u64 N, little-endian | N bytes of JSON header, padded with spaces | data buffer
// The header maps each tensor name to {"data_offsets":[begin,end],"dtype":"F32","shape":[...]},
// offsets relative to the start of the data buffer, and may hold "__metadata__", an object whose
// values are all strings. Tensors are row-major and little-endian, and together cover the data
// buffer exactly. bptt writes compact JSON with sorted keys, stores tensors in sorted name order
// and pads N to a multiple of 8, so the same content always gives the same bytes.
//
// Checksum: bptt adds "checksum": "crc32:xxxxxxxx" to __metadata__ (zlib crc32 as 8 lowercase hex
// digits) computed over the whole file, length prefix included, with those 8 digits written as
// '0'. A file whose __metadata__ has a "checksum" key, or any value beginning "crc32:", must
// carry a checksum that matches; files with neither (written by other tools) load unchecked. The
// checksum is a property of the file: Load removes it from metadata() and Save writes a new one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace bptt {

// The element types bptt reads and writes, named in files as "F32", "F64", "I32", ... "U64".
enum class DType { kF32, kF64, kI32, kI64, kU8, kU16, kU32, kU64 };

std::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);  // bytes per element

class Safetensors {
 public:
  struct Tensor {
    DType dtype;
    std::vector<int64_t> shape;  // row-major; [] is a scalar, a 0 anywhere makes it empty
    std::vector<uint8_t> bytes;  // little-endian, product(shape) * DTypeSize(dtype) bytes, held...
    std::span<const uint8_t> mapped = {};  // ...or, from Load, in the file's mapping (bytes empty)
    // The values' bytes, wherever they are held.
    std::span<const uint8_t> data() const { return mapped.empty() ? std::span<const uint8_t>(bytes) : mapped; }
  };

  // Adds tensor `name`, replacing any tensor of that name. values.size() must equal the
  // product of shape; `name` must be valid UTF-8 and not "__metadata__".
  void Put(const std::string& name, std::vector<int64_t> shape, std::span<const float> values);
  void Put(const std::string& name, std::vector<int64_t> shape, std::span<const double> values);
  void Put(const std::string& name, std::vector<int64_t> shape, std::span<const int32_t> values);
  void Put(const std::string& name, std::vector<int64_t> shape, std::span<const int64_t> values);
  void Put(const std::string& name, std::vector<int64_t> shape, std::span<const uint8_t> values);
  void Put(const std::string& name, std::vector<int64_t> shape, std::span<const uint16_t> values);
  void Put(const std::string& name, std::vector<int64_t> shape, std::span<const uint32_t> values);
  void Put(const std::string& name, std::vector<int64_t> shape, std::span<const uint64_t> values);

  // Returns the values of tensor `name`, row-major. T is one of the element types Put takes.
  // Throws bptt::Error "<file>: tensor 'x' is missing", "... has dtype F64, expected F32" or
  // "... has shape [2, 3], expected [3, 2]".
  template <typename T>
  std::vector<T> Get(const std::string& name, const std::vector<int64_t>& expected_shape) const;
  // The tensor itself, after the checks Get makes: for a reader that converts its bytes as it
  // copies them.
  template <typename T>
  const Tensor& Checked(const std::string& name, const std::vector<int64_t>& expected_shape) const;

  bool Has(const std::string& name) const { return tensors_.count(name) != 0; }
  const Tensor* Find(const std::string& name) const;  // nullptr when absent
  std::vector<std::string> Names() const;             // sorted
  // Bytes of all tensors: those held, and those of the file that Parse or Load did not keep.
  uint64_t DataBytes() const;

  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Whether the file read by Parse or Load carried a checksum (which then matched).
  bool checksum_verified() const { return checksum_verified_; }
  // Sets __metadata__[key]. Both must be valid UTF-8; "checksum" and values beginning
  // "crc32:" are reserved for the checksum that Save writes.
  void SetMetadata(const std::string& key, std::string value);

  // The file's bytes, checksum included.
  std::vector<uint8_t> Serialize() const;
  // Which tensors Parse and Load copy out of a file (all of them when empty). Every tensor of
  // the file is validated (checksum, dtype, shape, tiling) either way; the ones not kept are left
  // out of the returned object, as if the file did not hold them.
  using Keep = std::function<bool(const std::string& name)>;

  // Validates a whole file's bytes and copies its tensors (those `keep` accepts); errors begin
  // "<name_for_errors>: safetensors".
  static Safetensors Parse(std::span<const uint8_t> bytes, std::string_view name_for_errors, const Keep& keep = {});

  // Writes a temporary file in the same directory, fsyncs it, renames it over `path` and fsyncs
  // the directory. On failure throws bptt::Error naming `path` and the OS error, removes the
  // temporary file and leaves any previous file at `path` as it was.
  void Save(const std::filesystem::path& path) const;
  // Memory-maps the file and validates it whole (as Parse). The tensors `keep` accepts are not
  // copied: they point into the mapping, which lasts as long as the object (or a copy of it)
  // does. A reader that needs part of a file (the model of a checkpoint, not its optimizer
  // state) pays for checking the rest, and converts what it keeps as it reads it.
  static Safetensors Load(const std::filesystem::path& path, const Keep& keep = {});

 private:
  template <typename T>
  void PutValues(const std::string& name, std::vector<int64_t> shape, std::span<const T> values);
  // Parse; with `mapping` (the memory `bytes` lie in), the kept tensors point into it instead of
  // being copied.
  static Safetensors ParseIn(std::span<const uint8_t> bytes, std::string_view name_for_errors, const Keep& keep,
                             std::shared_ptr<const void> mapping);

  std::map<std::string, Tensor> tensors_;
  std::map<std::string, std::string> metadata_;
  std::string source_ = "safetensors";  // names the file in Get's errors
  bool checksum_verified_ = false;
  uint64_t unkept_bytes_ = 0;  // of the tensors of the file that were not kept
  std::shared_ptr<const void> mapping_;  // Load's file mapping, while a tensor points into it
};

// Writes `bytes` to a temporary file beside `path` (".NAME.tmpPID-N"), fsyncs it, renames it over
// `path` and fsyncs the directory: the file at `path` is the old one or the new one, whole. On
// failure throws bptt::Error naming `path` and removes the temporary file. Safetensors::Save
// writes this way; so does anything else that must not be lost halfway (run_directory.h).
void WriteFileAtomically(const std::filesystem::path& path, std::span<const uint8_t> bytes);

}  // namespace bptt
