// Numeric arrays in the files people keep sequence data in, read whole into memory: NumPy's .npy
// and .npz (a zip archive of .npy members, read through libzip), the IDX files of MNIST-style
// data sets (gzipped or not), and CSV tables (csv.h). Written: .npy, for predictions.
//
// An Array keeps the file's element type and bytes; its values are read out as floats (inputs,
// targets) or integers (class labels), and every value that cannot be one — a NaN, an
// infinity, a label that is not an integer — is a bptt::Error naming the file, the member and
// the element by its index in every dimension ("x.npz: member 'x': NaN at element (3, 17, 2)").
// Files that are not what they claim are a one-line error naming the file and what is wrong.
//
// Plain files and .gz files are read alike (zlib's gzread passes plain bytes through).
//
//   Array x = ReadNpzMember("train.npz", "x");      // or ReadNpy, ReadIdx
//   std::vector<float> values = x.Floats();
//   WriteNpy("pred.npy", {N, K}, probabilities);
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace bptt::formats {

enum class ElementType { kBool, kInt8, kUInt8, kInt16, kUInt16, kInt32, kUInt32, kInt64, kUInt64, kFloat32, kFloat64 };

struct Array {
  std::string source;           // for messages: "x.npy", "data.npz: member 'x'"
  std::vector<int64_t> shape;   // C order (a Fortran-order .npy is transposed on reading)
  ElementType type = ElementType::kFloat32;
  std::vector<uint8_t> bytes;   // little-endian elements in C order

  int64_t size() const;  // elements: the product of the shape
  bool integral() const { return type != ElementType::kFloat32 && type != ElementType::kFloat64; }
  // Element k (C order) as a double.
  double At(int64_t k) const;
  // "(3, 17, 2)": element k's index in every dimension.
  std::string Index(int64_t k) const;
  // Every element as a float; throws on a NaN or an infinity, naming the element (unless
  // `finite` is false: padding may be NaN, and the caller checks what it reads).
  std::vector<float> Floats(bool finite = true) const;
  // Every element as an integer; a float element must hold an integer value.
  std::vector<int64_t> Integers() const;
};

// The bytes of a file, gunzipped when they are gzip's. Throws naming the path.
std::vector<uint8_t> ReadFileBytes(const std::filesystem::path& path);

// A .npy file's array (format versions 1.0, 2.0 and 3.0; little- or big-endian bool, integer
// and float elements; C or Fortran order). Object, string, complex and structured arrays are
// refused.
Array ReadNpy(const std::filesystem::path& path);
Array ParseNpy(std::span<const uint8_t> bytes, const std::string& source);

// The names of an .npz archive's arrays (member names without ".npy"), and one of them.
std::vector<std::string> NpzMembers(const std::filesystem::path& path);
Array ReadNpzMember(const std::filesystem::path& path, const std::string& name);

// An IDX file (LeCun's MNIST format: magic 0x0000TTDD, D big-endian 32-bit dimensions, then the
// elements big-endian), gzipped or not.
Array ReadIdx(const std::filesystem::path& path);

// Writes a C-order .npy (format 1.0) of float32 or int64 elements, atomically.
void WriteNpy(const std::filesystem::path& path, std::span<const int64_t> shape, std::span<const float> values);
void WriteNpy(const std::filesystem::path& path, std::span<const int64_t> shape, std::span<const int64_t> values);

// What a file is, from its name (and, for IDX, its first bytes): .npy, .npz, .csv (.csv.gz),
// or IDX (names with "idx" in them, or "-ubyte").
enum class FileFormat { kNpy, kNpz, kCsv, kIdx };
FileFormat FormatOf(const std::filesystem::path& path);

}  // namespace bptt::formats
