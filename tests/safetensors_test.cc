#include "bptt/safetensors.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <bit>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bptt/error.h"
#include "test_util.h"

namespace bptt {
namespace {

using test::ErrorOf;

namespace fs = std::filesystem;

std::vector<uint8_t> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void WriteFile(const fs::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A file in the documented layout: u64 little-endian header length, header, data.
std::vector<uint8_t> MakeFile(std::string_view header, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> file(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) file[i] = static_cast<uint8_t>(uint64_t{header.size()} >> (8 * i));
  std::copy(header.begin(), header.end(), file.begin() + 8);
  std::copy(data.begin(), data.end(), file.begin() + 8 + header.size());
  return file;
}

template <typename T>
std::vector<uint8_t> LittleEndianBytes(std::initializer_list<T> values) {
  std::vector<uint8_t> out;
  for (T value : values) {
    const auto bits = std::bit_cast<std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>>(value);
    for (size_t i = 0; i < sizeof(T); ++i) out.push_back(static_cast<uint8_t>(bits >> (8 * i)));
  }
  return out;
}

// Fills in "crc32:00000000" in a file's header the way the format defines the checksum: zlib
// crc32 of the whole file with the digits written as '0'.
void WriteChecksum(std::vector<uint8_t>& file) {
  const std::string zeros = "\"checksum\":\"crc32:00000000\"";
  const auto at = std::search(file.begin(), file.end(), zeros.begin(), zeros.end());
  ASSERT_NE(at, file.end());
  const uint32_t crc = static_cast<uint32_t>(crc32(0, file.data(), static_cast<uInt>(file.size())));
  char digits[9];
  std::snprintf(digits, sizeof(digits), "%08x", crc);
  std::copy(digits, digits + 8, at + zeros.size() - 9);
}

// Parses `file` expecting one-line bptt::Error "hand.safetensors: safetensors ...<expected>...".
void ExpectRefused(const std::vector<uint8_t>& file, std::string_view expected) {
  try {
    Safetensors::Parse(file, "hand.safetensors");
    ADD_FAILURE() << "accepted a file that should fail with: " << expected;
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_TRUE(message.starts_with("hand.safetensors: safetensors ")) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

template <typename T>
bool SameBits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// A small model-like file: two tensors and one metadata entry.
Safetensors SmallSet() {
  Safetensors st;
  st.Put("b", {3}, std::vector<uint8_t>{7, 8, 9});
  st.Put("w", {2, 2}, std::vector<float>{1.0f, -2.0f, 0.5f, 3.25f});
  st.SetMetadata("step", "3");
  return st;
}

class SafetensorsFileTest : public test::TempDirTest {
 protected:
  void TearDown() override {
    fs::permissions(dir_, fs::perms::owner_all);  // a test may have made it read-only
    TempDirTest::TearDown();
  }
  size_t EntryCount(const fs::path& dir) const {
    return static_cast<size_t>(
        std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
  }
};

TEST_F(SafetensorsFileTest, RoundTripIsBitExact) {
  const std::vector<float> floats = {0.0f,
                                     -0.0f,
                                     1.0f / 3.0f,
                                     std::numeric_limits<float>::infinity(),
                                     -std::numeric_limits<float>::infinity(),
                                     std::numeric_limits<float>::quiet_NaN(),
                                     std::bit_cast<float>(0xFFC12345u),  // NaN with a payload
                                     std::numeric_limits<float>::denorm_min(),
                                     -std::numeric_limits<float>::denorm_min() * 77,
                                     std::numeric_limits<float>::max(),
                                     std::numeric_limits<float>::min(),
                                     -1e-30f};
  const std::vector<double> doubles = {std::numeric_limits<double>::quiet_NaN(),
                                       std::bit_cast<double>(0x7FF0000000000001ull),
                                       std::numeric_limits<double>::denorm_min(),
                                       -std::numeric_limits<double>::infinity(), -0.0, 0.1};
  const std::vector<int32_t> int32s = {std::numeric_limits<int32_t>::min(), -1, 0, 1,
                                       std::numeric_limits<int32_t>::max(), 42};
  const std::vector<int64_t> int64s = {std::numeric_limits<int64_t>::min(),
                                       std::numeric_limits<int64_t>::max()};
  std::vector<uint8_t> uint8s(256);
  for (int i = 0; i < 256; ++i) uint8s[i] = static_cast<uint8_t>(i);
  const std::vector<uint16_t> uint16s = {0, 1, 65535};
  const std::vector<uint32_t> uint32s = {0, 4294967295u};
  const std::vector<uint64_t> uint64s = {0, std::numeric_limits<uint64_t>::max(), 1ull << 63};

  Safetensors st;
  st.Put("floats", {3, 4}, floats);
  st.Put("doubles", {2, 1, 3}, doubles);
  st.Put("int32s", {6}, int32s);
  st.Put("int64s", {2}, int64s);
  st.Put("uint8s", {16, 16}, uint8s);
  st.Put("uint16s", {3}, uint16s);
  st.Put("uint32s", {2}, uint32s);
  st.Put("uint64s", {3}, uint64s);
  st.Put("empty", {0, 5}, std::vector<float>{});
  st.Put("scalar", {}, std::vector<double>{2.5});
  st.Put("layer.0/π", {1}, std::vector<int32_t>{-7});  // UTF-8 and punctuation in names
  st.SetMetadata("note", "ünïcode \"quoted\"\nand a newline");
  const fs::path path = dir_ / "all.safetensors";
  st.Save(path);

  const Safetensors loaded = Safetensors::Load(path);
  EXPECT_EQ(loaded.Names(), st.Names());
  EXPECT_EQ(loaded.metadata(), st.metadata());
  for (const std::string& name : st.Names()) {
    ASSERT_NE(loaded.Find(name), nullptr) << name;
    EXPECT_EQ(loaded.Find(name)->dtype, st.Find(name)->dtype) << name;
    EXPECT_EQ(loaded.Find(name)->shape, st.Find(name)->shape) << name;
    EXPECT_TRUE(std::ranges::equal(loaded.Find(name)->data(), st.Find(name)->data())) << name;
    // Load reads the values in the file's mapping; it does not copy them.
    EXPECT_TRUE(loaded.Find(name)->bytes.empty()) << name;
    EXPECT_EQ(loaded.Find(name)->mapped.size(), st.Find(name)->bytes.size()) << name;
  }
  {
    // The mapping lasts while any copy of the loaded object does; the copy writes the same file.
    std::optional<Safetensors> first = Safetensors::Load(path);
    const Safetensors copy = *first;
    first.reset();
    EXPECT_TRUE(SameBits(copy.Get<float>("floats", {3, 4}), floats));
    EXPECT_EQ(copy.Serialize(), st.Serialize());
  }
  // Loading part of the file: the other tensors are left out.
  const Safetensors part = Safetensors::Load(path, [](const std::string& name) { return name.starts_with("uint"); });
  EXPECT_EQ(part.Names(), (std::vector<std::string>{"uint16s", "uint32s", "uint64s", "uint8s"}));
  EXPECT_EQ(part.Get<uint8_t>("uint8s", {16, 16}), uint8s);
  EXPECT_FALSE(part.Has("floats"));
  EXPECT_EQ(part.metadata(), st.metadata());
  EXPECT_TRUE(part.checksum_verified());
  EXPECT_EQ(part.DataBytes(), loaded.DataBytes());
  EXPECT_TRUE(SameBits(loaded.Get<float>("floats", {3, 4}), floats));
  EXPECT_TRUE(SameBits(loaded.Get<double>("doubles", {2, 1, 3}), doubles));
  EXPECT_EQ(loaded.Get<int32_t>("int32s", {6}), int32s);
  EXPECT_EQ(loaded.Get<int64_t>("int64s", {2}), int64s);
  EXPECT_EQ(loaded.Get<uint8_t>("uint8s", {16, 16}), uint8s);
  EXPECT_EQ(loaded.Get<uint16_t>("uint16s", {3}), uint16s);
  EXPECT_EQ(loaded.Get<uint32_t>("uint32s", {2}), uint32s);
  EXPECT_EQ(loaded.Get<uint64_t>("uint64s", {3}), uint64s);
  EXPECT_TRUE(loaded.Get<float>("empty", {0, 5}).empty());
  EXPECT_EQ(loaded.Get<double>("scalar", {}), std::vector<double>{2.5});
  EXPECT_EQ(loaded.Get<int32_t>("layer.0/π", {1}), std::vector<int32_t>{-7});
  EXPECT_TRUE(loaded.Has("scalar"));
  EXPECT_FALSE(loaded.Has("nothing"));
  EXPECT_EQ(loaded.Find("nothing"), nullptr);
}

TEST(SafetensorsTest, SameContentGivesSameBytes) {
  Safetensors first;
  first.Put("z", {2}, std::vector<float>{1, 2});
  first.Put("a", {1}, std::vector<int64_t>{3});
  first.SetMetadata("y", "1");
  first.SetMetadata("b", "2");
  Safetensors second;
  second.SetMetadata("b", "2");
  second.Put("a", {1}, std::vector<int64_t>{3});
  second.SetMetadata("y", "1");
  second.Put("z", {2}, std::vector<float>{1, 2});
  const std::vector<uint8_t> bytes = first.Serialize();
  EXPECT_EQ(second.Serialize(), bytes);
  // Load drops the checksum and Save writes it again, so a reloaded file reserializes exactly.
  EXPECT_EQ(Safetensors::Parse(bytes, "x").Serialize(), bytes);
  EXPECT_EQ(Safetensors::Parse(bytes, "x").metadata().count("checksum"), 0u);
}

TEST(SafetensorsTest, WritesTheDocumentedLayout) {
  Safetensors st;
  st.Put("w", {2}, std::vector<float>{1.0f, -2.0f});
  st.Put("b", {1}, std::vector<uint16_t>{0x0102});
  st.SetMetadata("format", "pt");
  const std::vector<uint8_t> file = st.Serialize();

  std::string header = R"({"__metadata__":{"checksum":"crc32:00000000","format":"pt"},)"
                       R"("b":{"data_offsets":[0,2],"dtype":"U16","shape":[1]},)"
                       R"("w":{"data_offsets":[2,10],"dtype":"F32","shape":[2]}})";
  header.append((8 - header.size() % 8) % 8, ' ');  // pads so the data starts 8-aligned
  std::vector<uint8_t> data = {0x02, 0x01};
  const std::vector<uint8_t> floats = LittleEndianBytes({1.0f, -2.0f});
  data.insert(data.end(), floats.begin(), floats.end());
  std::vector<uint8_t> expected = MakeFile(header, data);
  WriteChecksum(expected);
  EXPECT_EQ(file, expected);
  EXPECT_EQ((file.size() - data.size()) % 8, 0u);
}

TEST(SafetensorsTest, LoadsAFileBuiltByHand) {
  // Pretty-printed, unsorted, tensors out of name order in the data, no checksum: the way
  // another tool may write a file.
  const std::string header = R"({
    "z": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
    "__metadata__": {"format": "pt"},
    "m": {"shape": [2, 2], "dtype": "U8", "data_offsets": [24, 28]},
    "a": {"dtype": "I64", "shape": [], "data_offsets": [16, 24]},
    "e": {"dtype": "F32", "shape": [0], "data_offsets": [16, 16]}
  }   )";
  std::vector<uint8_t> data = LittleEndianBytes({1.5, -2.25});
  const std::vector<uint8_t> a = LittleEndianBytes<int64_t>({-7});
  data.insert(data.end(), a.begin(), a.end());
  data.insert(data.end(), {1, 2, 3, 4});
  const Safetensors st = Safetensors::Parse(MakeFile(header, data), "hand.safetensors");
  EXPECT_EQ(st.Names(), (std::vector<std::string>{"a", "e", "m", "z"}));
  EXPECT_EQ(st.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  EXPECT_EQ(st.Get<double>("z", {2}), (std::vector<double>{1.5, -2.25}));
  EXPECT_EQ(st.Get<int64_t>("a", {}), std::vector<int64_t>{-7});
  EXPECT_EQ(st.Get<uint8_t>("m", {2, 2}), (std::vector<uint8_t>{1, 2, 3, 4}));
  EXPECT_TRUE(st.Get<float>("e", {0}).empty());
}

TEST(SafetensorsTest, LoadsAHandBuiltFileWithAChecksum) {
  std::vector<uint8_t> file =
      MakeFile(R"({"__metadata__":{"checksum":"crc32:00000000"},)"
               R"("x":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}})",
               LittleEndianBytes<int32_t>({123456}));
  WriteChecksum(file);
  const Safetensors st = Safetensors::Parse(file, "hand.safetensors");
  EXPECT_EQ(st.Get<int32_t>("x", {1}), std::vector<int32_t>{123456});
  EXPECT_TRUE(st.metadata().empty());
}

TEST(SafetensorsTest, EveryFlippedBitIsRefused) {
  const std::vector<uint8_t> file = SmallSet().Serialize();
  ASSERT_NO_THROW(Safetensors::Parse(file, "small"));
  for (size_t i = 0; i < file.size(); ++i) {
    for (int mask : {1, 2, 4, 8, 16, 32, 64, 128, 255}) {
      std::vector<uint8_t> flipped = file;
      flipped[i] ^= static_cast<uint8_t>(mask);
      try {
        Safetensors::Parse(flipped, "flipped");
        ADD_FAILURE() << "accepted byte " << i << " xor " << mask;
      } catch (const Error&) {
      }
    }
  }
}

TEST(SafetensorsTest, EveryTruncationIsRefused) {
  const std::vector<uint8_t> file = SmallSet().Serialize();
  for (size_t size = 0; size < file.size(); ++size) {
    const std::vector<uint8_t> truncated(file.begin(), file.begin() + size);
    EXPECT_THROW(Safetensors::Parse(truncated, "truncated"), Error) << size;
  }
  std::vector<uint8_t> longer = file;
  longer.push_back(0);
  EXPECT_THROW(Safetensors::Parse(longer, "longer"), Error);
}

TEST(SafetensorsTest, RefusesMalformedHeaders) {
  const std::vector<uint8_t> four(4), eight(8), twelve(12);
  const std::string f32 = R"("dtype":"F32","shape":[1],"data_offsets":[0,4])";

  ExpectRefused({1, 2, 3}, "file is 3 bytes, too short");
  std::vector<uint8_t> short_header = MakeFile("{}", {});
  short_header[0] = 100;
  ExpectRefused(short_header, "header length 100 exceeds the 2 bytes after it");
  std::vector<uint8_t> huge_header = MakeFile("{}", {});
  huge_header[4] = 1;  // 2^32 + 2
  ExpectRefused(huge_header, "exceeds the limit of 100000000 bytes");
  ExpectRefused(MakeFile("", {}), "does not start with '{'");
  ExpectRefused(MakeFile("[]", {}), "does not start with '{'");
  ExpectRefused(MakeFile(" {}", {}), "does not start with '{'");
  ExpectRefused(MakeFile(R"({"a":)", {}), "is not valid JSON");
  ExpectRefused(MakeFile("{} x", {}), "is not valid JSON");
  ExpectRefused(MakeFile("{}\n\x01", {}), "is not valid JSON");
  ExpectRefused(MakeFile("{\"\xff\":{" + f32 + "}}", four), "is not valid JSON");
  ExpectRefused(MakeFile(R"({"a":3})", {}), "tensor 'a' is not an object");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}})", {0, 0}),
                "tensor 'a' has unsupported dtype 'F16'");
  ExpectRefused(MakeFile(R"({"a":{"dtype":5,"shape":[1],"data_offsets":[0,4]}})", four),
                "tensor 'a' dtype is not a string");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", four),
                "tensor 'a' shape has a dim that is not a non-negative integer");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", four),
                "tensor 'a' shape has a dim that is not a non-negative integer");
  ExpectRefused(
      MakeFile(R"({"a":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,4]}})",
               four),
      "tensor 'a' shape has a dim that is not a non-negative integer");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":"1","data_offsets":[0,4]}})", four),
                "tensor 'a' shape is not an array");
  ExpectRefused(
      MakeFile(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})",
               four),
      "tensor 'a' shape [4294967296, 4294967296] is too large");
  ExpectRefused(
      MakeFile(R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,4]}})",
               four),
      "tensor 'a' shape [2305843009213693952] is too large");
  std::string long_shape = "[1";
  for (int i = 0; i < 64; ++i) long_shape += ",1";
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":)" + long_shape +
                             R"(],"data_offsets":[0,4]}})",
                         four),
                "has an array longer than 64");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[1]}})", four),
                "tensor 'a' has no data_offsets");
  ExpectRefused(MakeFile(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", four),
                "tensor 'a' has no dtype");
  for (const char* offsets : {"[0,4,8]", "[0]", "[\"0\",\"4\"]", "[-4,0]", "[0,4.0]", "{}"}) {
    ExpectRefused(
        MakeFile(std::string(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":)") + offsets +
                     "}}",
                 four),
        "tensor 'a' data_offsets is not two non-negative integers");
  }
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", eight),
                "tensor 'a' data_offsets end before they begin");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", four),
                "tensor 'a' data_offsets end at 8, past the data buffer of 4 bytes");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", four),
                "tensor 'a' spans 4 bytes but F32 [2] needs 8");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                         twelve),
                "tensor 'b' overlaps tensor 'a'");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                         twelve),
                "leaves data bytes [4, 8) unused");
  ExpectRefused(MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
                "leaves data bytes [0, 4) unused");
  ExpectRefused(MakeFile("{\"a\":{" + f32 + "}}", eight), "leaves data bytes [4, 8) unused");
  ExpectRefused(MakeFile("{}", four), "leaves data bytes [0, 4) unused");
  ExpectRefused(MakeFile("{\"a\":{" + f32 + ",\"extra\":1}}", four),
                "tensor 'a' has unknown field 'extra'");
  ExpectRefused(MakeFile("{\"a\":{" + f32 + "},\"a\":{" + f32 + "}}", four),
                "repeats the key 'a'");
  ExpectRefused(MakeFile("{\"a\\nb\":{" + f32 + "},\"a\\nb\":{" + f32 + "}}", four),
                "repeats the key 'a\\x0ab'");
  ExpectRefused(MakeFile(R"({"a":{"b":{"c":[]}}})", {}), "nests deeper than 3 levels");
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  ExpectRefused(MakeFile("{\"a\":" + deep + "}", {}), "nests deeper than 3 levels");
  ExpectRefused(MakeFile(R"({"__metadata__":[]})", {}), "__metadata__ is not an object");
  ExpectRefused(MakeFile(R"({"__metadata__":{"n":1}})", {}),
                "__metadata__ value 'n' is not a string");
  ExpectRefused(MakeFile(R"({"__metadata__":{"n":{}}})", {}),
                "__metadata__ value 'n' is not a string");
  ExpectRefused(MakeFile(R"({"__metadata__":{"checksum":"crc32:XYZ"}})", {}),
                "checksum 'crc32:XYZ' is not crc32: and 8 lowercase hex digits");
  ExpectRefused(MakeFile(R"({"__metadata__":{"checksum":"CRC32:0123ABCD"}})", {}),
                "is not crc32: and 8 lowercase hex digits");
  ExpectRefused(MakeFile(R"({"__metadata__":{"sum":"crc32:01234567"}})", {}),
                "metadata 'sum' holds a crc32 value; only 'checksum' may");
  ExpectRefused(MakeFile(R"({"__metadata__":{"checksum": "crc32:01234567"}})", {}),
                R"(checksum is not written as "checksum":"crc32:01234567")");
  ExpectRefused(MakeFile(R"({"__metadata__":{"checksum":"crc32:01234567"}})", {}),
                "checksum mismatch: the file says crc32:01234567, its bytes give crc32:");
}

TEST(SafetensorsTest, AcceptsEmptyTensorsAnywhereAndNoTensors) {
  const Safetensors none = Safetensors::Parse(MakeFile("{}", {}), "none");
  EXPECT_TRUE(none.Names().empty());
  const Safetensors empties = Safetensors::Parse(
      MakeFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
               R"("c":{"dtype":"U8","shape":[2,0],"data_offsets":[4,4]},)"
               R"("d":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}})",
               std::vector<uint8_t>(4)),
      "empties");
  EXPECT_EQ(empties.Names(), (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(empties.Get<uint8_t>("c", {2, 0}), std::vector<uint8_t>{});
}

TEST_F(SafetensorsFileTest, LoadNamesTheFileInErrors) {
  EXPECT_EQ(ErrorOf([&] { Safetensors::Load(dir_ / "missing.safetensors"); }),
            (dir_ / "missing.safetensors").string() + ": cannot open: No such file or directory");
  EXPECT_EQ(ErrorOf([&] { Safetensors::Load(dir_); }), dir_.string() + ": not a regular file");
  const fs::path path = dir_ / "bad.safetensors";
  WriteFile(path, MakeFile("{}", {1}));
  EXPECT_EQ(ErrorOf([&] { Safetensors::Load(path); }),
            path.string() + ": safetensors header leaves data bytes [0, 1) unused");
}

TEST(SafetensorsTest, GetChecksNameDtypeAndShape) {
  const Safetensors st = Safetensors::Parse(SmallSet().Serialize(), "m.safetensors");
  EXPECT_EQ(st.Get<float>("w", {2, 2}), (std::vector<float>{1.0f, -2.0f, 0.5f, 3.25f}));
  EXPECT_EQ(ErrorOf([&] { st.Get<float>("x", {2, 2}); }), "m.safetensors: tensor 'x' is missing");
  EXPECT_EQ(ErrorOf([&] { st.Get<double>("w", {2, 2}); }),
            "m.safetensors: tensor 'w' has dtype F32, expected F64");
  EXPECT_EQ(ErrorOf([&] { st.Get<float>("w", {4}); }),
            "m.safetensors: tensor 'w' has shape [2, 2], expected [4]");
  EXPECT_EQ(ErrorOf([&] { st.Get<float>("w", {}); }),
            "m.safetensors: tensor 'w' has shape [2, 2], expected []");
}

TEST(SafetensorsTest, PutAndSetMetadataRefuseBadInput) {
  Safetensors st;
  const std::vector<float> three(3);
  EXPECT_EQ(ErrorOf([&] { st.Put("w", {2, 2}, three); }),
            "safetensors: tensor 'w' shape [2, 2] needs 4 values, got 3");
  EXPECT_EQ(ErrorOf([&] { st.Put("w", {-1, -3}, three); }),
            "safetensors: tensor 'w' shape [-1, -3] has a negative dim or is too large");
  EXPECT_EQ(ErrorOf([&] { st.Put("__metadata__", {3}, three); }),
            "safetensors: tensor '__metadata__' uses the name reserved for metadata");
  EXPECT_EQ(ErrorOf([&] { st.Put("bad\xff", {3}, three); }),
            "safetensors: tensor 'bad\xff' name is not valid UTF-8");
  EXPECT_EQ(ErrorOf([&] { st.SetMetadata("checksum", "x"); }),
            "safetensors: metadata 'checksum' is reserved for the checksum Save writes");
  EXPECT_EQ(ErrorOf([&] { st.SetMetadata("sum", "crc32:00000000"); }),
            "safetensors: metadata 'sum' value begins 'crc32:', reserved for checksums");
  EXPECT_EQ(ErrorOf([&] { st.SetMetadata("k", "\xc3"); }),
            "safetensors: metadata 'k' is not valid UTF-8");
  EXPECT_TRUE(st.Names().empty());
  EXPECT_TRUE(st.metadata().empty());
}

TEST_F(SafetensorsFileTest, SaveReplacesTheFileAndLeavesNoTemporary) {
  const fs::path path = dir_ / "m.safetensors";
  SmallSet().Save(path);
  Safetensors next;
  next.Put("only", {1}, std::vector<double>{4.0});
  next.Save(path);
  EXPECT_EQ(ReadFile(path), next.Serialize());
  EXPECT_EQ(EntryCount(dir_), 1u);
}

TEST_F(SafetensorsFileTest, SaveIntoAMissingDirectoryFails) {
  const fs::path path = dir_ / "no" / "m.safetensors";
  const std::string message = ErrorOf([&] { SmallSet().Save(path); });
  EXPECT_TRUE(message.starts_with(path.string() + ": cannot create temporary file ")) << message;
  EXPECT_TRUE(message.ends_with(": No such file or directory")) << message;
}

// Drops root's power to ignore file permissions for the scope, so that an unwritable directory
// is unwritable to this test even when it runs as root.
class AsUnprivilegedUser {
 public:
  AsUnprivilegedUser() : was_root_(geteuid() == 0) {
    if (was_root_) {
      EXPECT_EQ(seteuid(65534), 0) << std::strerror(errno);
    }
  }
  ~AsUnprivilegedUser() {
    if (was_root_) {
      EXPECT_EQ(seteuid(0), 0) << std::strerror(errno);
    }
  }

 private:
  bool was_root_;
};

TEST_F(SafetensorsFileTest, SaveIntoAnUnwritableDirectoryKeepsTheOldFile) {
  const fs::path path = dir_ / "m.safetensors";
  SmallSet().Save(path);
  const std::vector<uint8_t> old_bytes = ReadFile(path);
  fs::permissions(dir_, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                            fs::perms::group_exec | fs::perms::others_read |
                            fs::perms::others_exec);
  std::string message;
  {
    AsUnprivilegedUser unprivileged;
    Safetensors next;
    next.Put("only", {1}, std::vector<double>{4.0});
    message = ErrorOf([&] { next.Save(path); });
  }
  EXPECT_TRUE(message.starts_with(path.string() + ": cannot create temporary file ")) << message;
  EXPECT_TRUE(message.ends_with(": Permission denied")) << message;
  EXPECT_EQ(ReadFile(path), old_bytes);
  EXPECT_EQ(EntryCount(dir_), 1u);
}

// RLIMIT_FSIZE makes the kernel fail a write part way (EFBIG), as a full disk would.
TEST_F(SafetensorsFileTest, FailedWriteKeepsTheOldFile) {
  const fs::path path = dir_ / "m.safetensors";
  SmallSet().Save(path);
  const std::vector<uint8_t> old_bytes = ReadFile(path);
  Safetensors big;
  big.Put("w", {4096}, std::vector<float>(4096, 1.0f));

  rlimit old_limit;
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  const auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit small_limit = old_limit;
  small_limit.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &small_limit), 0);
  const std::string message = ErrorOf([&] { big.Save(path); });
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
  std::signal(SIGXFSZ, old_handler);

  EXPECT_TRUE(message.starts_with(path.string() + ": write to ")) << message;
  EXPECT_TRUE(message.ends_with(" failed: File too large")) << message;
  EXPECT_EQ(ReadFile(path), old_bytes);
  EXPECT_EQ(EntryCount(dir_), 1u);
}

TEST_F(SafetensorsFileTest, FailedRenameKeepsTheTargetAndLeavesNoTemporary) {
  const fs::path path = dir_ / "m.safetensors";
  fs::create_directory(path);
  WriteFile(path / "inside", {1, 2, 3});
  const std::string message = ErrorOf([&] { SmallSet().Save(path); });
  EXPECT_TRUE(message.starts_with(path.string() + ": cannot rename ")) << message;
  EXPECT_TRUE(message.ends_with(": Is a directory")) << message;
  EXPECT_EQ(ReadFile(path / "inside"), (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(EntryCount(dir_), 1u);
}

}  // namespace
}  // namespace bptt
