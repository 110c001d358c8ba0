// Sequences of the user's own (sequences.h) on small data the tests write: every file format
// (.npy of each element type, order and version; .npz stored and deflated; IDX raw and gzipped;
// CSV in both layouts) read to the same values, and every malformed file a one-line error naming
// the file, the row or element and the problem. Then training end to end: a classifier that
// learns, standardisation kept in the checkpoint and applied at prediction, a resumed run that
// ends with the weights of an uninterrupted one, and forecasts fed back autoregressively.
#include <gtest/gtest.h>
#include <zip.h>
#include <zlib.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/sequences.h"
#include "bptt/trainer.h"
#include "formats/arrays.h"
#include "formats/csv.h"
#include "test_util.h"

namespace bptt {
namespace {

namespace fs = std::filesystem;
using test::ErrorOf;

// The bytes of a .npy file: magic, version, header (padded to 64 with a newline), data.
std::string Npy(const std::string& descr, const std::string& shape, const std::string& data, bool fortran = false,
                int version = 1) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                       ", 'shape': " + shape + ", }";
  const size_t prefix = version == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  const size_t n = header.size();
  out += static_cast<char>(n & 0xff);
  out += static_cast<char>((n >> 8) & 0xff);
  if (version != 1) out += std::string(2, '\0');
  return out + header + data;
}

template <typename T>
std::string Bytes(std::initializer_list<T> values, bool big_endian = false) {
  std::string out;
  for (T v : values) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    if (big_endian) std::reverse(b, b + sizeof(T));
    out.append(b, sizeof(T));
  }
  return out;
}

class SequencesTest : public test::TempDirTest {
 protected:
  // An .npz of the given members (name -> .npy bytes), each deflated or stored.
  fs::path Npz(const std::string& name, const std::vector<std::pair<std::string, std::string>>& members,
               bool deflate = true) {
    const fs::path path = dir_ / name;
    int error = 0;
    zip_t* z = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &error);
    EXPECT_NE(z, nullptr);
    for (const auto& [member, bytes] : members) {
      zip_source_t* source = zip_source_buffer(z, bytes.data(), bytes.size(), 0);
      const zip_int64_t index = zip_file_add(z, (member + ".npy").c_str(), source, ZIP_FL_OVERWRITE);
      EXPECT_GE(index, 0);
      zip_set_file_compression(z, static_cast<zip_uint64_t>(index), deflate ? ZIP_CM_DEFLATE : ZIP_CM_STORE, 0);
    }
    EXPECT_EQ(zip_close(z), 0);  // writes while the buffers above are alive
    return path;
  }

  fs::path Gzip(const std::string& name, const std::string& bytes) {
    const fs::path path = dir_ / name;
    gzFile out = gzopen(path.c_str(), "wb");
    gzwrite(out, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(out);
    return path;
  }
};

TEST_F(SequencesTest, NpyOfEveryElementTypeOrderAndVersion) {
  const std::string f4 = Bytes<float>({1, 2, 3, 4, 5, 6});
  const std::vector<float> want = {1, 2, 3, 4, 5, 6};
  EXPECT_EQ(formats::ReadNpy(Write("a.npy", Npy("<f4", "(2, 3)", f4))).Floats(), want);
  EXPECT_EQ(formats::ReadNpy(Write("b.npy", Npy(">f8", "(2, 3)", Bytes<double>({1, 2, 3, 4, 5, 6}, true)))).Floats(), want);
  EXPECT_EQ(formats::ReadNpy(Write("c.npy", Npy("|u1", "(2, 3)", "\x01\x02\x03\x04\x05\x06"))).Floats(), want);
  EXPECT_EQ(formats::ReadNpy(Write("d.npy", Npy("<i2", "(2, 3)", Bytes<int16_t>({1, 2, 3, 4, 5, 6}), false, 2))).Floats(), want);
  // Fortran order: the same matrix stored column by column.
  const formats::Array fortran = formats::ReadNpy(Write("e.npy", Npy("<i8", "(2, 3)", Bytes<int64_t>({1, 4, 2, 5, 3, 6}), true)));
  EXPECT_EQ(fortran.Floats(), want);
  EXPECT_EQ(fortran.Integers(), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(formats::ReadNpy(Write("f.npy", Npy("|b1", "(3,)", std::string("\x01\x00\x01", 3)))).Integers(),
            (std::vector<int64_t>{1, 0, 1}));
  // WriteNpy reads back.
  const std::vector<int64_t> shape = {3, 2};
  formats::WriteNpy(dir_ / "w.npy", shape, std::span<const float>(want));
  const formats::Array w = formats::ReadNpy(dir_ / "w.npy");
  EXPECT_EQ(w.shape, shape);
  EXPECT_EQ(w.Floats(), want);
}

TEST_F(SequencesTest, MalformedNpyIsAOneLineErrorNamingFileAndElement) {
  EXPECT_NE(ErrorOf([&] { formats::ReadNpy(Write("x.npy", "not numpy")); }).find("x.npy: not a .npy file"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { formats::ReadNpy(Write("o.npy", Npy("|O", "(2,)", "xxxxxxxxxxxxxxxx"))); })
                .find("is not a number type"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { formats::ReadNpy(Write("s.npy", Npy("<U4", "(1,)", "xxxxxxxxxxxxxxxx"))); })
                .find("'<U4' is not one bptt reads"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { formats::ReadNpy(Write("t.npy", Npy("<f4", "(2, 3)", Bytes<float>({1, 2})))); })
                .find("t.npy: truncated"),
            std::string::npos);
  const float nan = std::nanf("");
  const std::string message =
      ErrorOf([&] { formats::ReadNpy(Write("n.npy", Npy("<f4", "(2, 2, 2)", Bytes<float>({0, 1, 2, 3, 4, nan, 6, 7})))).Floats(); });
  EXPECT_NE(message.find("n.npy: NaN at element (1, 0, 1)"), std::string::npos) << message;
  EXPECT_NE(ErrorOf([&] { formats::ReadNpy(Write("r.npy", Npy("<f4", "(2,)", Bytes<float>({1, 2.5f})))).Integers(); })
                .find("2.5 at element (1) is not an integer"),
            std::string::npos);
}

TEST_F(SequencesTest, NpzStoredAndDeflatedWithLengthsOrMask) {
  const std::string x = Npy("<f4", "(3, 4, 2)", Bytes<float>({1, 1, 2, 2, 3, 3, 4, 4,     //
                                                               5, 5, 6, 6, NAN, NAN, NAN, NAN,  // 2 steps
                                                               7, 7, NAN, NAN, NAN, NAN, NAN, NAN}));  // 1 step
  const std::string y = Npy("<i8", "(3,)", Bytes<int64_t>({0, 2, 1}));
  for (const bool deflate : {true, false}) {
    SequenceOptions o;
    o.data = Npz(deflate ? "d.npz" : "s.npz", {{"x", x}, {"y", y}, {"lengths", Npy("<i4", "(3,)", Bytes<int32_t>({4, 2, 1}))}},
                 deflate)
                 .string();
    const SequenceSet s = ReadSequences(o, o.data, "");
    EXPECT_EQ(s.N, 3);
    EXPECT_EQ(s.T, 4);
    EXPECT_EQ(s.D, 2);
    EXPECT_EQ(s.lengths, (std::vector<int32_t>{4, 2, 1}));
    EXPECT_EQ(s.classes, (std::vector<int32_t>{0, 2, 1}));
    EXPECT_EQ(s.step(2, 0)[1], 7.0f);
  }
  // A mask instead of lengths, X and Y in capitals.
  SequenceOptions o;
  o.data = Npz("m.npz", {{"X", x},
                         {"Y", y},
                         {"mask", Npy("|u1", "(3, 4)", std::string("\x01\x01\x01\x01\x01\x01\x00\x00\x01\x00\x00\x00", 12))}})
               .string();
  EXPECT_EQ(ReadSequences(o, o.data, "").lengths, (std::vector<int32_t>{4, 2, 1}));
  // Malformed: NaN inside a sequence, a mask with a gap, labels out of range, mismatched N, no y.
  const auto error = [&](const std::vector<std::pair<std::string, std::string>>& members, int classes = 0) {
    SequenceOptions bad;
    bad.data = Npz("bad.npz", members).string();
    bad.classes = classes;
    return ErrorOf([&] { ReadSequences(bad, bad.data, ""); });
  };
  std::string e = error({{"x", x}, {"y", y}});
  EXPECT_NE(e.find("bad.npz: NaN at element (1, 2, 0) of the inputs"), std::string::npos) << e;
  e = error({{"x", x}, {"y", y}, {"mask", Npy("|u1", "(3, 4)", std::string("\x01\x01\x01\x01\x01\x00\x01\x00\x01\x00\x00\x00", 12))}});
  EXPECT_NE(e.find("member 'mask': the mask of sequence 1 has a step at 2 after a gap"), std::string::npos) << e;
  e = error({{"x", x}, {"y", y}, {"lengths", Npy("<i4", "(3,)", Bytes<int32_t>({4, 2, 1}))}}, 2);
  EXPECT_NE(e.find("bad.npz: label 2 of sequence 1 is not below --classes 2"), std::string::npos) << e;
  e = error({{"x", x}, {"y", Npy("<i8", "(3,)", Bytes<int64_t>({0, -1, 1}))}, {"lengths", Npy("<i4", "(3,)", Bytes<int32_t>({4, 2, 1}))}});
  EXPECT_NE(e.find("label -1 at element (1) is negative"), std::string::npos) << e;
  e = error({{"x", x}, {"y", Npy("<i8", "(2,)", Bytes<int64_t>({0, 1}))}});
  EXPECT_NE(e.find("member 'y': targets for 2 sequences, but the inputs (" + (dir_ / "bad.npz").string() + ") have 3"),
            std::string::npos)
      << e;
  e = error({{"x", x}});
  EXPECT_NE(e.find("no targets: give --labels FILE, or an array 'y' in it"), std::string::npos) << e;
  e = error({{"inputs", x}});
  EXPECT_NE(e.find("has no array 'x' (it has inputs"), std::string::npos) << e;
  EXPECT_NE(ErrorOf([&] { formats::NpzMembers(Write("z.npz", "PK junk")); }).find("z.npz: cannot read it as an .npz"),
            std::string::npos);
}

TEST_F(SequencesTest, IdxRawAndGzippedRowByRowOrPixelByPixel) {
  // Two 2x3 images of uint8 and their labels (IDX: big-endian header).
  const std::string images = std::string("\0\0\x08\x03\0\0\0\x02\0\0\0\x02\0\0\0\x03", 16) + "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c";
  const std::string labels = std::string("\0\0\x08\x01\0\0\0\x02", 8) + "\x07\x03";
  SequenceOptions o;
  o.data = Gzip("train-images-idx3-ubyte.gz", images).string();
  o.labels = Write("train-labels-idx1-ubyte", labels).string();
  SequenceSet s = ReadSequences(o, o.data, o.labels);
  EXPECT_EQ(s.N, 2);
  EXPECT_EQ(s.T, 2);
  EXPECT_EQ(s.D, 3);
  EXPECT_EQ(s.step(1, 1)[2], 12.0f);
  EXPECT_EQ(s.classes, (std::vector<int32_t>{7, 3}));
  o.steps = StepLayout::kElements;
  s = ReadSequences(o, o.data, o.labels);
  EXPECT_EQ(s.T, 6);
  EXPECT_EQ(s.D, 1);
  EXPECT_EQ(s.step(1, 5)[0], 12.0f);
  // Big-endian int16 IDX.
  const std::string shorts = std::string("\0\0\x0b\x01\0\0\0\x02", 8) + std::string("\x01\x00\xff\xfe", 4);
  EXPECT_EQ(formats::ReadIdx(Write("s-idx1-short", shorts)).Integers(), (std::vector<int64_t>{256, -2}));
  EXPECT_NE(ErrorOf([&] { formats::ReadIdx(Write("t-idx3-ubyte", images.substr(0, 20))); })
                .find("t-idx3-ubyte: IDX file of shape (2, 2, 3) needs 12 bytes of data, it has 4"),
            std::string::npos);
  EXPECT_NE(ErrorOf([&] { formats::ReadIdx(Write("u-idx1-ubyte", "\x01\x02\x03\x04")); }).find("not an IDX file"),
            std::string::npos);
}

TEST_F(SequencesTest, CsvWideAndLongLayouts) {
  // Wide: a header, one sequence per row, the label last, a shorter sequence ending early.
  SequenceOptions o;
  o.data = Write("wide.csv", "x0,x1,x2,label\n1,2,3,cat\n4,5,,dog\r\n\"7\",8,9,cat\n").string();
  SequenceSet s = ReadSequences(o, o.data, "");
  EXPECT_EQ(s.N, 3);
  EXPECT_EQ(s.T, 3);
  EXPECT_EQ(s.lengths, (std::vector<int32_t>{3, 2, 3}));
  EXPECT_EQ(s.class_names, (std::vector<std::string>{"cat", "dog"}));
  EXPECT_EQ(s.classes, (std::vector<int32_t>{0, 1, 0}));
  EXPECT_EQ(s.step(2, 0)[0], 7.0f);
  // Long: one step per row, two features, per-step labels.
  o.data = Write("long.csv", "id,a,b,y\ns1,1,10,0\ns1,2,20,1\ns2,3,30,1\ns1x,4,40,0\ns1x,5,50,2\ns1x,6,60,2\n").string();
  o.id_column = "id";
  o.head = SequenceHead::kLabel;
  s = ReadSequences(o, o.data, "");
  EXPECT_EQ(s.N, 3);
  EXPECT_EQ(s.D, 2);
  EXPECT_EQ(s.lengths, (std::vector<int32_t>{2, 1, 3}));
  EXPECT_EQ(s.step(2, 2)[1], 60.0f);
  EXPECT_EQ(s.classes[2 * 3 + 2], 2);
  // Regression targets in two columns, by name.
  o.head = SequenceHead::kClassify;
  o.id_column.clear();
  o.data = Write("reg.csv", "t1,t2,x0,x1\n0.5,1,1,2\n1.5,2,3,4\n").string();
  o.head = SequenceHead::kRegress;
  o.label_column = "t1,t2";
  s = ReadSequences(o, o.data, "");
  EXPECT_EQ(s.O, 2);
  EXPECT_EQ(s.values, (std::vector<float>{0.5f, 1, 1.5f, 2}));
  EXPECT_EQ(s.T, 2);
}

TEST_F(SequencesTest, MalformedCsvIsAOneLineErrorNamingFileLineAndColumn) {
  const auto error = [&](const std::string& text, SequenceOptions o = {}) {
    o.data = Write("bad.csv", text).string();
    return ErrorOf([&] { ReadSequences(o, o.data, ""); });
  };
  const std::string p = (dir_ / "bad.csv").string();
  EXPECT_EQ(error("a,b,y\n1,2,0\n3,4\n"), p + ": line 3 has 2 fields, the table 3 (ragged rows)");
  EXPECT_EQ(error("a,b,y\n1,NaN,0\n"), p + ": line 2, column 'b': NaN is not a finite number");
  EXPECT_EQ(error("a,b,y\n1,x,0\n"), p + ": line 2, column 'b': 'x' is not a number");
  EXPECT_EQ(error("a,b,y\n1,,0\n2,3,1\n"), "");  // a shorter sequence
  EXPECT_EQ(error("a,b,c,y\n1,,3,0\n"), p + ": line 2, column 'c': a value after an empty field (a shorter sequence leaves its last fields empty)");
  SequenceOptions classes;
  classes.classes = 2;
  EXPECT_EQ(error("a,y\n1,0\n2,5\n", classes), p + ": label 5 of sequence 1 is not below --classes 2");
  SequenceOptions long_layout;
  long_layout.id_column = "id";
  EXPECT_EQ(error("id,a,y\n1,1,0\n2,1,1\n1,3,0\n", long_layout),
            p + ": line 4: sequence '1' continues after another began (keep each sequence's rows together)");
  EXPECT_EQ(error("id,a,y\n1,1,0\n1,1,1\n", long_layout),
            p + ": line 3: sequence '1' has label '1' here and '0' on its first row (a sequence has one label; --head "
                "label labels each step)");
  SequenceOptions column;
  column.label_column = "z";
  EXPECT_EQ(error("a,y\n1,0\n", column), p + ": --label-column 'z' is not a column of the table (its columns: a, y)");
  EXPECT_EQ(error(""), p + ": no rows");
}

TEST_F(SequencesTest, StatisticsAndTheSpecRoundTrip) {
  SequenceSet s = SequenceSet::Owning("m", 2, 3, 2, {1, 10, 3, 10, 100, 100, 5, 10, 7, 10, 9, 10});
  s.lengths = {2, 3};
  s.values = {1, 3};
  s.O = 1;
  const std::vector<int64_t> all = {0, 1};
  const Standardizer in = InputStatistics(s, all);
  EXPECT_DOUBLE_EQ(in.mean[0], (1 + 3 + 5 + 7 + 9) / 5.0);  // the padding (100) is not counted
  EXPECT_DOUBLE_EQ(in.scale[0], std::sqrt(8.0));
  EXPECT_DOUBLE_EQ(in.scale[1], 1.0);  // never varies
  SequenceOptions o;
  o.head = SequenceHead::kRegress;
  o.loss = RegressionLoss::kHuber;
  o.huber_delta = 0.25;
  o.pool = Pooling::kMean;
  o.data = "m.npz";
  const SequenceSpec spec = MakeSequenceSpec(o, s, all);
  EXPECT_DOUBLE_EQ(spec.outputs.mean[0], 2.0);
  const SequenceSpec back = SequenceSpec::FromJson(spec.ToJson(), "ck");
  EXPECT_EQ(back.ToJson(), spec.ToJson());
  ModelConfig config;
  back.Shape(config);
  EXPECT_EQ(config.input_size, 2);
  EXPECT_EQ(config.output_size, 1);
  EXPECT_EQ(config.pooling, Pooling::kMean);
  EXPECT_EQ(config.regression_loss, RegressionLoss::kHuber);
  EXPECT_EQ(config.huber_delta, 0.25);
  nlohmann::json broken = spec.ToJson();
  broken["inputs"]["scale"][0] = -1.0;
  EXPECT_NE(ErrorOf([&] { SequenceSpec::FromJson(broken, "ck"); }).find("ck: the standardisation of value 0"),
            std::string::npos);
}

TEST(Forecasting, SeasonalNaiveAndMase) {
  // 1, 2, 3, 1, 2, 3, 1, 2 with season 3: the naive forecast repeats the last season.
  SequenceSet s = SequenceSet::Owning("s", 1, 8, 1, {1, 2, 3, 1, 2, 4, 1, 2});
  EXPECT_EQ(SeasonalNaive(s, 6, 5, 3), (std::vector<float>{1, 2, 4, 1, 2}));
  // |1-1| + |2-2| + |4-3| over the 3 pairs three steps apart in the first 6.
  EXPECT_DOUBLE_EQ(MaseScale(s, 6, 0, 3), 1.0 / 3);
  EXPECT_DOUBLE_EQ(MaseScale(s, 8, 0, 1), (1 + 1 + 2 + 1 + 2 + 3 + 1) / 7.0);
}

// ---------------------------------------------------------------------------------------------
// Training end to end.

// N sequences of 3 features and lengths 3..10 whose class (of 3) is the sign pattern of the sum
// of feature 0 and the first step of feature 1, offset by 50 so that standardisation matters.
SequenceSet ClassData(int64_t N, uint64_t seed) {
  Rng rng(seed);
  const int64_t T = 10;
  std::vector<float> x(static_cast<size_t>(N * T * 3), 0.0f);
  SequenceSet s;
  for (int64_t n = 0; n < N; ++n) {
    const int L = 3 + static_cast<int>(rng.Below(8));
    double sum = 0;
    for (int t = 0; t < L; ++t)
      for (int d = 0; d < 3; ++d) {
        const double v = rng.Uniform(-1, 1);
        x[static_cast<size_t>((n * T + t) * 3 + d)] = static_cast<float>(50 + v);
        if (d == 0) sum += v;
      }
    s.lengths.push_back(L);
    const bool first = x[static_cast<size_t>(n * T * 3 + 1)] > 50;
    s.classes.push_back(sum > 0 ? (first ? 2 : 1) : 0);
  }
  SequenceSet out = SequenceSet::Owning("generated", N, T, 3, std::move(x));
  out.lengths = std::move(s.lengths);
  out.classes = std::move(s.classes);
  return out;
}

class SequenceTrainingTest : public test::TempDirTest {
 protected:
  TrainOptions Options(const std::string& run, std::shared_ptr<const SequenceArrays> arrays) {
    TrainOptions o;
    o.sequences.data = std::string(kArraysData);
    o.arrays = std::move(arrays);
    o.out = (dir_ / run).string();
    o.model.hidden_size = 24;
    o.model.layers = 1;
    o.batch = 16;
    o.lr = 1e-2;
    o.val_frac = 0.2;
    o.eval_every = 40;
    o.log_every = 40;
    o.checkpoint_every = 40;
    o.threads = 1;
    return o;
  }
};

TEST_F(SequenceTrainingTest, AClassifierLearnsAndPredictsFromItsCheckpoint) {
  auto arrays = std::make_shared<SequenceArrays>();
  arrays->train = ClassData(640, 1);
  TrainOptions o = Options("run", arrays);
  o.max_steps = 240;
  std::ostringstream log;
  const TrainResult r = Train(o, log, false);
  ASSERT_EQ(r.end, TrainEnd::kFinished) << log.str();
  const double accuracy = r.summary["validation"]["accuracy"].get<double>();
  EXPECT_GT(accuracy, 0.8) << r.summary.dump();  // chance: about 0.5 for the largest class
  // The checkpoint keeps the standardisation: predicting the validation split from the file
  // gives the summary's accuracy (the inputs sit at 50; unstandardised they would saturate).
  const Checkpoint ck = LoadCheckpoint(r.dir / "best.safetensors");
  const SequenceSpec spec = SequenceSpec::FromJson(ck.sequences, "best");
  EXPECT_NEAR(spec.inputs.mean[0], 50.0, 0.05);
  const SequenceSet test = ClassData(200, 99);
  const nlohmann::json scores = ScoreSequences(ck.config, ck.params, spec, test, 1);
  EXPECT_GT(scores["accuracy"].get<double>(), 0.8) << scores.dump();
  const PredictionArray p = Predict(ck.config, ck.params, spec, test, 1, 7);  // any batch size
  ASSERT_EQ(p.shape, (std::vector<int64_t>{200, 3}));
  const std::vector<int64_t> classes = PredictedClasses(p, test);
  int64_t right = 0;
  for (size_t n = 0; n < classes.size(); ++n) right += classes[n] == test.classes[n] ? 1 : 0;
  EXPECT_DOUBLE_EQ(static_cast<double>(right) / 200, scores["accuracy"].get<double>());
  for (int64_t n = 0; n < 200; ++n)
    EXPECT_NEAR(p.values[static_cast<size_t>(3 * n)] + p.values[static_cast<size_t>(3 * n + 1)] +
                    p.values[static_cast<size_t>(3 * n + 2)],
                1.0, 1e-5);
}

TEST_F(SequenceTrainingTest, AResumedRunEndsWithTheWeightsOfAnUninterruptedOne) {
  auto arrays = std::make_shared<SequenceArrays>();
  arrays->train = ClassData(160, 2);
  std::ostringstream log;
  TrainOptions whole = Options("whole", arrays);
  whole.max_steps = 20;  // more than an epoch of 8 steps: the shuffles of later epochs too
  whole.checkpoint_every = 5;
  whole.model.dropout = 0.3;
  whole.model.layers = 2;
  ASSERT_EQ(Train(whole, log, false).end, TrainEnd::kFinished);
  TrainOptions half = whole;
  half.out = (dir_ / "half").string();
  half.max_steps = 13;
  ASSERT_EQ(Train(half, log, false).end, TrainEnd::kFinished);
  // Resuming from the library with the arrays given again.
  TrainOptions again = half;
  again.max_steps = 20;
  const Checkpoint at13 = LoadCheckpoint(dir_ / "half" / "latest.safetensors", CheckpointUse::kResume);
  nlohmann::json given = {{"max-steps", 20}};
  // Resume reads options from the checkpoint, where the arrays are not: refused with a message.
  EXPECT_NE(ErrorOf([&] { Resume(dir_ / "half", given, log, false); }).find("resumes only from Python"),
            std::string::npos);
  EXPECT_EQ(at13.step, 13);
  ASSERT_EQ(Resume(dir_ / "half", given, log, false, {}, arrays).end, TrainEnd::kFinished) << log.str();
  const Checkpoint a = LoadCheckpoint(dir_ / "whole" / "latest.safetensors");
  const Checkpoint b = LoadCheckpoint(dir_ / "half" / "latest.safetensors");
  std::vector<const Mat<float>*> bs;
  b.params.ForEach([&](const std::string&, const Mat<float>& m) { bs.push_back(&m); });
  size_t k = 0;
  a.params.ForEach([&](const std::string& name, const Mat<float>& m) {
    EXPECT_EQ(m, *bs[k++]) << name;
  });
}

TEST_F(SequenceTrainingTest, ForecastsFeedTheirPredictionsBack) {
  // A noisy seasonal series of period 8.
  Rng rng(3);
  std::vector<float> v(240);
  for (size_t t = 0; t < v.size(); ++t)
    v[t] = static_cast<float>(10 + 3 * std::sin(2 * M_PI * static_cast<double>(t) / 8) + rng.Uniform(-0.2, 0.2));
  auto arrays = std::make_shared<SequenceArrays>();
  arrays->train = SequenceSet::Owning("series", 1, 240, 1, v);
  TrainOptions o = Options("forecast", arrays);
  o.sequences.head = SequenceHead::kForecast;
  o.sequences.horizon = 2;
  o.sequences.season = 8;
  o.seq_len = 24;
  o.max_steps = 300;
  o.eval_every = 100;
  std::ostringstream log;
  const TrainResult r = Train(o, log, false);
  ASSERT_EQ(r.end, TrainEnd::kFinished) << log.str();
  const nlohmann::json& validation = r.summary["validation"];
  EXPECT_EQ(validation["held_out"], 48);
  // The model forecasts the held-out seasons well: its MAE within the noise's few tenths.
  EXPECT_LT(validation["mae"].get<double>(), 0.6) << validation.dump();
  const Checkpoint ck = LoadCheckpoint(r.dir / "best.safetensors");
  const SequenceSpec spec = SequenceSpec::FromJson(ck.sequences, "best");
  const SequenceSet series = arrays->train;
  const std::vector<float> f = Forecast(ck.config, ck.params, spec, series, 5, 1);
  ASSERT_EQ(f.size(), 5u);
  // The steps after the first H = 2 come from reading those two back in: the same as the
  // forecast of the series extended by them.
  std::vector<float> extended = v;
  extended.insert(extended.end(), f.begin(), f.begin() + 2);
  const std::vector<float> g =
      Forecast(ck.config, ck.params, spec, SequenceSet::Owning("extended", 1, 242, 1, extended), 3, 1);
  for (int h = 0; h < 3; ++h) EXPECT_NEAR(g[static_cast<size_t>(h)], f[static_cast<size_t>(2 + h)], 1e-4) << h;
}

}  // namespace
}  // namespace bptt
