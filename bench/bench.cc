// bptt_bench: times the library directly and prints one JSON line, for bench/run.
//
//   bptt_bench train  --corpus FILE --cell lstm --hidden 512 --layers 2 --batch 32 --seq 64
//                     [--precision bf16]  (bfloat16 products, as bptt train --precision)
//                     [--dropout 0.25 --zoneout 0.1 ...]  (every model option of bptt train)
//   bptt_bench sample --corpus FILE --cell lstm --hidden 512 --layers 2 --length 2000
//                     (batch 1, temperature 1, float32, bfloat16 and int8 products; best of --repeats)
//   bptt_bench peak   --size 2048            (SGEMM GFLOP/s: bptt's kernels, Eigen, and OpenBLAS when
//                                            linked; the same product in bfloat16 where the CPU has
//                                            AMX or AVX-512 BF16)
//   bptt_bench fma    --threads 2            (GFLOP/s of a loop of independent FMAs, AVX-512 or AVX2,
//                                            and of AVX-512 BF16 dot products where the CPU has them)
//   bptt_bench recurrent --cell lstm --hidden 512 --batch 32 --seq 64 --threads 2
//                     (GFLOP/s of the time loop's packed recurrent products alone, forward and
//                     backward, shared between the threads as in the cells; --precision bf16 likewise)
//
// `bptt_bench --help` lists the flags; the model's are bptt train's own table (ModelOptionSpecs),
// and a flag the mode does not use is refused.
//
// train runs exactly the trainer's step (trainer.cc): Forward, SoftmaxCrossEntropy, zeroing
// the gradients, Backward, global-norm clipping, carrying the state, an Adam update; on the
// benchmark split (vocabulary = the corpus's distinct symbols, last 10% held out). Throughput
// is B*T*steps / seconds over `steps` steps after `warmup` steps.
//
// FLOPs per symbol, forward (F): 2 per element of every weight matrix a symbol is multiplied by
// — each layer's weight_ih (G*H, E_l) and, for a cell with one, weight_hh (G*H, H), except
// layer 0's with one-hot input (a gather, no products); and the decoder's (V, H). Training is
// counted as 3F (backward = 2x forward). Sampling is not counted.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "bptt/clip.h"
#include "bptt/corpus.h"
#include "bptt/init.h"
#include "bptt/loss.h"
#include "bptt/model.h"
#include "bptt/optimizer.h"
#include "bptt/prune.h"
#include "bptt/recompute.h"
#include "bptt/sampler.h"
#include "bptt/trainer.h"
#include "kernels/cpu.h"
#include "kernels/packed_gemm.h"
#include "kernels/threads.h"
#include "options_cli.h"

#ifdef BPTT_BENCH_OPENBLAS
#include <cblas.h>
#endif
#include <immintrin.h>
#include <omp.h>

using Clock = std::chrono::steady_clock;

namespace {

double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double PeakRssMb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

// A "kB" field of /proc/self/status (VmRSS, VmHWM) in MiB; -1 when it cannot be read.
double StatusMb(const std::string& key) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) / 1024.0;
  }
  return -1;
}

// Restarts VmHWM from the current VmRSS (Linux >= 4.0), so that a later VmHWM is the peak of
// what runs after this call.
void ResetPeakRss() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Forward FLOPs per symbol (see the top of the file).
double ForwardFlopsPerSymbol(const bptt::ModelConfig& c) {
  double f = 2.0 * c.hidden_size * c.output_size;
  const bptt::ModelParams<float> shapes = bptt::ModelParams<float>::Shaped(c);
  for (int l = 0; l < c.layers; ++l)
    shapes.layers[l].ForEach([&](const bptt::ParamDecl& d, const bptt::Mat<float>& m) {
      const bool gather = l == 0 && d.name == "weight_ih" && c.embed_size == 0 && !c.dense_input();
      if (d.role == bptt::TensorRole::kWeight && !gather) f += 2.0 * static_cast<double>(m.size());
    });
  return f;
}

// The modes, a bit each: which of them an option applies to.
enum Mode : unsigned { kTrain = 1, kSample = 2, kPeak = 4, kFma = 8, kRecurrent = 16 };

struct Args {
  std::string mode;  // the positional MODE
  std::string corpus, work_dir = "/tmp/bptt_bench";
  // train, sample, recurrent: the model, with every option of bptt train's model table
  // (ModelOptionSpecs: cell, layers, hidden, the regularisers, ...); vocab from the corpus.
  bptt::ModelConfig model = bptt::LanguageModel(bptt::ParseCell("lstm"), 0, 0, 512, 2);
  int batch = 32, seq = 64, steps = 20, warmup = 3, threads = 2;
  int length = 2000, size = 2048, repeats = 5, sample_threads = 1;
  double sparsity = 0;  // sample: also time the model block-pruned to this (prune.h)
  std::string precision = "fp32";  // train: of the large products (compute.h)
  std::string checkpoint_steps = "0";  // train: memory-bounded BPTT (model.h): 0, K or auto
  std::string memory_budget = "0";     // train: or the segments and kept starts planned for this (recompute.h)

  unsigned Bit() const {
    constexpr std::pair<std::string_view, Mode> kModes[] = {
        {"train", kTrain}, {"sample", kSample}, {"peak", kPeak}, {"fma", kFma}, {"recurrent", kRecurrent}};
    for (const auto& [name, bit] : kModes)
      if (mode == name) return bit;
    throw std::runtime_error("MODE must be train, sample, peak, fma or recurrent, got '" + mode + "'");
  }
};

// The options, each declared once, with the modes that take it: a flag given to a mode that does
// not use it is refused, not ignored.
std::vector<bptt::OptionSpec<Args>> Specs() {
  using bptt::Field;
  using bptt::kAnyCommand;
  constexpr bptt::OnResume kNone = bptt::OnResume::kNone;
  const auto only = [](unsigned modes) {
    return [modes](const Args& a) {
      return (a.Bit() & modes) != 0 ? std::string() : "does not apply to bptt_bench " + a.mode;
    };
  };
  std::vector<bptt::OptionSpec<Args>> specs;
  for (auto spec : bptt::Nest<Args>(bptt::ModelOptionSpecs(), kAnyCommand, "", [](Args& a) -> auto& { return a.model; })) {
    const unsigned modes = spec.flag == "cell" || spec.flag == "hidden" ? kTrain | kSample | kRecurrent
                           : spec.flag == "layers" || spec.flag == "embed" || spec.flag == "residual" ||
                                   spec.flag == "layer-norm"
                               ? kTrain | kSample
                               : kTrain;  // the training regularisers
    specs.push_back(bptt::Restrict(std::move(spec), only(modes)));
  }
  const auto add = [&](unsigned modes, std::string_view flag, std::string_view help, auto access) {
    specs.push_back(bptt::Restrict(Field<Args>(kAnyCommand, flag, "", "Benchmark", help, kNone, access), only(modes)));
  };
  add(kTrain | kSample, "corpus", "text file", [](Args& a) -> auto& { return a.corpus; });
  add(kTrain | kRecurrent, "batch", "B", [](Args& a) -> auto& { return a.batch; });
  add(kTrain | kRecurrent, "seq", "T", [](Args& a) -> auto& { return a.seq; });
  add(kTrain, "steps", "timed training steps", [](Args& a) -> auto& { return a.steps; });
  add(kTrain, "warmup", "untimed training steps first", [](Args& a) -> auto& { return a.warmup; });
  specs.push_back(bptt::Restrict(bptt::Threads<Args>(kAnyCommand, "", "Benchmark", "OpenMP and Eigen threads", kNone,
                                                     [](Args& a) -> auto& { return a.threads; }, 1),
                                 only(kTrain | kPeak | kFma | kRecurrent)));
  add(kTrain | kRecurrent, "precision", "the products in fp32, or bf16 (bptt train --precision)",
      [](Args& a) -> auto& { return a.precision; });
  add(kTrain, "checkpoint-steps", "keep the state every K steps and recompute the caches (0 = every step; auto = sqrt(T))",
      [](Args& a) -> auto& { return a.checkpoint_steps; });
  add(kTrain, "memory-budget", "bytes a training step may take (e.g. 256M): memory-bounded BPTT planned to fit it",
      [](Args& a) -> auto& { return a.memory_budget; });
  add(kSample, "length", "symbols per sample", [](Args& a) -> auto& { return a.length; });
  add(kSample, "sample-threads", "threads splitting each per-symbol product (SampleOptions::threads)",
      [](Args& a) -> auto& { return a.sample_threads; });
  add(kSample, "sparsity",
      "also time int8 sampling of the model with this fraction of its recurrent-layer matrices' 16x4 blocks "
      "pruned (bptt train --prune; the blocks of least norm)",
      [](Args& a) -> auto& { return a.sparsity; });
  add(kSample | kPeak | kFma | kRecurrent, "repeats", "best of this many", [](Args& a) -> auto& { return a.repeats; });
  add(kPeak, "size", "n of the n x n SGEMM", [](Args& a) -> auto& { return a.size; });
  add(kTrain | kSample, "work-dir", "where the encoded corpus is written", [](Args& a) -> auto& { return a.work_dir; });
  return specs;
}

// The benchmark corpus, encoded into a file of work_dir that is removed once mapped.
bptt::EncodedCorpus LoadCorpus(const Args& a) {
  std::filesystem::create_directories(a.work_dir);
  const auto path = std::filesystem::path(a.work_dir) / ("corpus." + std::to_string(getpid()) + ".ids");
  bptt::EncodedCorpus corpus = bptt::EncodedCorpus::Build(bptt::ListCorpusFiles({a.corpus}).files, {}, path);
  std::filesystem::remove(path);
  return corpus;
}

bptt::ModelConfig Config(const Args& a, int vocab_size) {
  bptt::ModelConfig c = a.model;
  c.vocab_size = c.output_size = vocab_size;
  c.Validate();
  return c;
}

nlohmann::json Train(const Args& a) {
  const bptt::EncodedCorpus corpus = LoadCorpus(a);
  const bptt::ModelConfig config = Config(a, corpus.vocab().size());
  const bptt::CorpusSplits splits = bptt::SplitCorpus(corpus.size(), 0.1, 0.0);
  const bptt::Compute compute{a.threads, bptt::ParsePrecision(a.precision, "--precision")};
  if (compute.products == bptt::Precision::kInt8) throw std::runtime_error("--precision must be fp32 or bf16");
  if (compute.products == bptt::Precision::kBfloat16 && !bptt::Bf16ProductsAvailable())
    throw std::runtime_error("--precision bf16 needs a CPU with AMX-BF16 or AVX-512 BF16");
  // The process before training: libraries, thread pools and the mapped corpus (touched here,
  // so that its pages count in the baseline, not in training's share).
  int64_t touch = 0;
  for (size_t i = 0; i < corpus.size(); i += 256) touch += corpus[i];
  const double baseline_mb = StatusMb("VmRSS");
  ResetPeakRss();
  bptt::BatchStream stream(corpus, splits.train, a.batch, a.seq);
  bptt::ModelParams<float> params = bptt::ModelParams<float>::Zeros(config), grads = params;
  bptt::Rng rng(1);
  bptt::Initialize(config, bptt::InitOptions{}, rng, params);
  bptt::State<float> state = bptt::State<float>::Zeros(config, a.batch);
  bptt::OptimizerOptions adam;
  bptt::OptimizerState<float> opt_state;
  bptt::ModelCache<float> cache;
  cache.checkpoint_steps = a.checkpoint_steps == "auto" ? bptt::kAutoCheckpointSteps : std::stoi(a.checkpoint_steps);
  const uint64_t budget = a.memory_budget == "0" ? 0 : bptt::ParseBytes(a.memory_budget, "--memory-budget");
  bptt::MemoryPlan plan;
  if (budget > 0) {
    if (cache.checkpoint_steps != 0) throw bptt::Error("give --memory-budget or --checkpoint-steps, not both");
    plan = bptt::PlanMemory(config, a.seq, a.batch, 2, compute.products, budget);
    cache.checkpoint_steps = plan.checkpoint_steps;
    cache.checkpoint_slots = plan.slots;
  }
  if (cache.checkpoint_steps != 0) bptt::KeepLargeBlocksOutOfTheHeap();  // as bptt train does in segments
  bptt::Batch<float> batch;
  batch.B = a.batch;
  bptt::Mat<float> dlogits;
  double loss = 0;
  const auto step = [&] {
    batch.T = stream.Next(batch.ids, batch.classes);
    if (batch.T == 0) {
      stream.Rewind();
      state.SetZero();
      batch.T = stream.Next(batch.ids, batch.classes);
    }
    bptt::Forward(config, params, batch, state, cache, compute, &rng);
    loss = bptt::HeadLoss(config, cache.outputs, batch, &dlogits, a.threads);
    grads.SetZero();
    bptt::Backward(config, params, batch, cache, dlogits, nullptr, grads, nullptr, compute);
    bptt::ClipGradNorm(grads, 5.0);
    bptt::FinalState(config, cache, state);
    bptt::OptimizerStep(adam, 2e-3, params, grads, opt_state, a.threads);
  };
  for (int s = 0; s < a.warmup; ++s) step();
  const Clock::time_point t0 = Clock::now();
  for (int s = 0; s < a.steps; ++s) step();
  const double seconds = Since(t0);
  const double chars = static_cast<double>(a.batch) * a.seq * a.steps / seconds;
  const double estimate = static_cast<double>(bptt::EstimateTrainingBytes(
      config, a.seq, a.batch, 2, compute.products, cache.checkpoint_steps, cache.checkpoint_slots));
  return {{"mode", "train"},
          {"checkpoint_steps", bptt::SegmentSteps(cache.checkpoint_steps, a.seq) == a.seq
                                   ? 0 : bptt::SegmentSteps(cache.checkpoint_steps, a.seq)},
          {"checkpoint_slots", cache.checkpoint_slots},
          {"memory_budget_mb", static_cast<double>(budget) / (1 << 20)},
          {"recomputed_segments", cache.recomputed_segments},
          {"forward_steps", budget > 0 ? plan.forward_steps : 0},
          {"cell", a.model.cell->name},
          {"hidden", a.model.hidden_size},
          {"layers", a.model.layers},
          {"model", bptt::ToJson(bptt::ModelOptionSpecs(), a.model)},
          {"batch", a.batch},
          {"seq", a.seq},
          {"threads", a.threads},
          {"precision", a.precision},
          {"vocab", config.vocab_size},
          {"parameters", bptt::ParameterCount(config)},
          {"steps", a.steps},
          {"seconds", seconds},
          {"loss", loss},
          {"train_chars_per_s", chars},
          {"flops_per_char", 3 * ForwardFlopsPerSymbol(config)},
          {"gflops", chars * 3 * ForwardFlopsPerSymbol(config) * 1e-9},
          {"peak_rss_mb", PeakRssMb()},
          {"baseline_rss_mb", baseline_mb},
          {"training_rss_mb", StatusMb("VmHWM") - baseline_mb},
          {"corpus_checksum", touch},
          {"estimate_mb", estimate / (1 << 20)}};
}

nlohmann::json Sample(const Args& a) {
  const bptt::EncodedCorpus corpus = LoadCorpus(a);
  const bptt::ModelConfig config = Config(a, corpus.vocab().size());
  bptt::ModelParams<float> params = bptt::ModelParams<float>::Zeros(config);
  bptt::Rng rng(1);
  bptt::Initialize(config, bptt::InitOptions{}, rng, params);
  bptt::Sampler sampler(config, params, corpus.vocab());
  bptt::SampleOptions options;
  options.length = a.length;
  options.threads = a.sample_threads;
  size_t bytes = 0;
  const bptt::TextSink sink = [&bytes](std::string_view text) { bytes += text.size(); };
  // Best of `repeats` samples of `length` symbols (after one untimed), in each precision.
  const auto chars_per_s = [&](bptt::Sampler& s, bptt::Precision precision) {
    options.precision = precision;
    s.Generate(options, sink);
    double best = 1e30;
    for (int r = 0; r < a.repeats; ++r) {
      const Clock::time_point t0 = Clock::now();
      s.Generate(options, sink);
      best = std::min(best, Since(t0));
    }
    return a.length / best;
  };
  const double fp32 = chars_per_s(sampler, bptt::Precision::kFloat32);
  const double bf16 = chars_per_s(sampler, bptt::Precision::kBfloat16);
  const double int8 = chars_per_s(sampler, bptt::Precision::kInt8);
  nlohmann::json sparse;
  if (a.sparsity > 0) {
    bptt::PruneOptions{.sparsity = a.sparsity}.Validate();
    bptt::BlockPruner(config, params).Step(params, a.sparsity);
    bptt::Sampler pruned(config, params, corpus.vocab());
    const double chars = chars_per_s(pruned, bptt::Precision::kInt8);
    sparse = {{"sparsity", a.sparsity},
              {"sample_int8_sparse_chars_per_s", chars},
              {"int8_sparse_us_per_char", 1e6 / chars},
              {"sparse_over_dense_int8", chars / int8}};
  }
  nlohmann::json out = {{"mode", "sample"},
          {"cell", a.model.cell->name},
          {"sample_threads", a.sample_threads},
          {"hidden", a.model.hidden_size},
          {"layers", a.model.layers},
          {"model", bptt::ToJson(bptt::ModelOptionSpecs(), a.model)},
          {"length", a.length},
          {"sample_fp32_chars_per_s", fp32},
          {"sample_bf16_chars_per_s", bf16},
          {"fp32_us_per_char", 1e6 / fp32},
          {"bf16_us_per_char", 1e6 / bf16},
          {"sample_int8_chars_per_s", int8},
          {"int8_us_per_char", 1e6 / int8},
          {"peak_rss_mb", PeakRssMb()}};
  out.update(sparse);
  return out;
}

// C = A B for square n x n matrices, best of `repeats`: as bptt's large products run
// (ParallelProduct: the packed kernels of kernels/sgemm.h where the CPU has AVX2), through Eigen
// (each thread its rows, as ParallelProduct runs it without those kernels), through OpenBLAS
// when linked, and in bfloat16 (Bf16Product) where the CPU has AMX or AVX-512 BF16.
nlohmann::json Peak(const Args& a) {
  const Eigen::Index n = a.size;
  bptt::Mat<float> A = bptt::Mat<float>::Random(n, n), B = bptt::Mat<float>::Random(n, n), C(n, n);
  const double flops = 2.0 * n * n * n;
  const auto gflops = [&](auto&& product) {
    double best = 1e30;
    for (int r = 0; r < a.repeats + 1; ++r) {
      const Clock::time_point t0 = Clock::now();
      product();
      if (r > 0) best = std::min(best, Since(t0));
    }
    return flops / best * 1e-9;
  };
  nlohmann::json out = {{"mode", "peak"}, {"size", n}, {"threads", a.threads}};
  out["bptt_gflops"] = gflops([&] { bptt::ParallelProduct(C, A, B, false, a.threads); });
  out["eigen_gflops"] = gflops([&] {
#pragma omp parallel num_threads(a.threads)
    {
      const auto [begin, end] = bptt::ThreadRange(n, 16);
      if (begin < end) C.middleRows(begin, end - begin).noalias() = A.middleRows(begin, end - begin) * B;
    }
  });
  if (bptt::Bf16ProductsAvailable())
    out["bf16_gflops"] = gflops([&] {
      bptt::ParallelProduct(C, A, B, false, bptt::Compute{a.threads, bptt::Precision::kBfloat16});
    });
#ifdef BPTT_BENCH_OPENBLAS
  out["openblas_gflops"] = gflops([&] {
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(),
                n);
  });
#endif
  return out;
}

constexpr int64_t kIterations = 20'000'000;  // rounds of the FMA-peak loops
constexpr int kChains = 16;                  // independent accumulators: enough to cover an FMA's latency on two ports

// Seconds of kIterations rounds of acc = step(acc) on kChains independent accumulators, in
// registers only, on the calling thread; the sum of the lanes goes to `sink`. One function per
// instruction, each compiled for its instruction set (chosen at run time, kernels/cpu.h).
__attribute__((target("avx512f,fma"))) double FmaSecondsAvx512(float& sink) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512 scale = _mm512_set1_ps(0.999999f), shift = _mm512_set1_ps(1e-6f);
  const double t0 = omp_get_wtime();
  for (int64_t i = 0; i < kIterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], scale, shift);
  }
  const double seconds = omp_get_wtime() - t0;
  for (int c = 0; c < kChains; ++c) sink += _mm512_reduce_add_ps(acc[c]);
  return seconds;
}
// AVX2 has 16 registers: 12 chains and the two constants.
__attribute__((target("avx2,fma"))) double FmaSecondsAvx2(float& sink) {
  constexpr int kYmmChains = 12;
  __m256 acc[kYmmChains];
  for (int c = 0; c < kYmmChains; ++c) acc[c] = _mm256_set1_ps(static_cast<float>(c));
  const __m256 scale = _mm256_set1_ps(0.999999f), shift = _mm256_set1_ps(1e-6f);
  const double t0 = omp_get_wtime();
  for (int64_t i = 0; i < kIterations * kChains / kYmmChains; ++i) {
#pragma GCC unroll 12
    for (int c = 0; c < kYmmChains; ++c) acc[c] = _mm256_fmadd_ps(acc[c], scale, shift);
  }
  const double seconds = omp_get_wtime() - t0;
  alignas(32) float lanes[8];
  for (int c = 0; c < kYmmChains; ++c) {
    _mm256_store_ps(lanes, acc[c]);
    for (float x : lanes) sink += x;
  }
  return seconds;
}
__attribute__((target("avx512f,avx512bf16"))) double DotSecondsAvx512Bf16(float& sink) {
  __m512 acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c));
  const __m512bh x = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(-1e-3f));
  const __m512bh y = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.5f), _mm512_set1_ps(0.25f));
  const double t0 = omp_get_wtime();
  for (int64_t i = 0; i < kIterations; ++i) {
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], x, y);
  }
  const double seconds = omp_get_wtime() - t0;
  for (int c = 0; c < kChains; ++c) sink += _mm512_reduce_add_ps(acc[c]);
  return seconds;
}

// Best of `repeats` (after one untimed) of `seconds` run on every one of `threads` threads at
// once (the slowest thread's time).
double BestSeconds(int threads, int repeats, double (*seconds)(float&), float& sink) {
  double best = 1e30;
  for (int r = 0; r < repeats + 1; ++r) {
    double slowest = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sink) reduction(max : slowest)
    {
#pragma omp barrier
      slowest = seconds(sink);
    }
    if (r > 0) best = std::min(best, slowest);
  }
  return best;
}

// The FMA units' peak: float FMAs (2 FLOPs per lane) of the widest vectors in force, which
// bounds what any float32 kernel can reach on the machine; and, where the CPU has AVX-512 BF16,
// its dot products (VDPBF16PS: 32 bfloat16 products summed into 16 floats, 64 FLOPs), the bound of
// bf16 training's products.
nlohmann::json Fma(const Args& a) {
  const bptt::CpuFeatures& cpu = bptt::ThisCpu();
  if (!cpu.avx2) throw std::runtime_error("fma needs AVX2 or AVX-512 (or BPTT_MAX_ISA caps them)");
  const double rounds = static_cast<double>(kChains) * kIterations * a.threads;  // vectors over all threads
  float sink = 0;
  const double fma = BestSeconds(a.threads, a.repeats, cpu.avx512 ? &FmaSecondsAvx512 : &FmaSecondsAvx2, sink);
  nlohmann::json out = {{"mode", "fma"},
                        {"threads", a.threads},
                        {"isa", cpu.avx512 ? "avx512" : "avx2"},
                        {"fma_gflops", (cpu.avx512 ? 32 : 16) * rounds / fma * 1e-9}};
  if (cpu.avx512_bf16) out["bf16_dot_gflops"] = 64 * rounds / BestSeconds(a.threads, a.repeats, &DotSecondsAvx512Bf16, sink) * 1e-9;
  out["checksum"] = sink;
  return out;
}

// The recurrent products of one layer's sweeps, as the cells run them (lstm.cc): per step t,
// forward a_t += W_hh h_{t-1} (G*H, B) and backward dh = W_hh^T da_t (H, B), over weights packed
// once, shared between the threads as StepShare (packed_gemm.h) says; random weights and inputs. Reports
// the best of `repeats` sweeps, in GFLOP/s, and the packed weights' bytes: against the FMA peak
// (fma) this shows what the memory side costs when the weights do not fit a core's L2.
nlohmann::json Recurrent(const Args& a) {
  const Eigen::Index G = a.model.cell->gates, H = a.model.hidden_size, B = a.batch, T = a.seq;
  const bptt::Mat<float> w = bptt::Mat<float>::Random(G * H, H);
  const bptt::Precision precision = bptt::ParsePrecision(a.precision, "--precision");
  if (precision == bptt::Precision::kBfloat16 && !bptt::Bf16ProductsAvailable())
    throw std::runtime_error("--precision bf16 needs a CPU with AMX-BF16 or AVX-512 BF16");
  bptt::PackedMatrix<float> packed, packed_t;  // as the cells pack them (compute.h)
  bptt::Pack(w, false, precision, packed);
  bptt::Pack(w, true, precision, packed_t);
  bptt::Mat<float> h = bptt::Mat<float>::Random(H, B * (T + 1)), gates = bptt::Mat<float>::Random(G * H, B * T);
  bptt::Mat<float> dh = bptt::Mat<float>::Zero(H, B);
  double forward = 1e30, backward = 1e30;
  for (int r = 0; r < a.repeats + 1; ++r) {
    const Clock::time_point t0 = Clock::now();
#pragma omp parallel num_threads(a.threads)
    {
      const bptt::StepShare share(G * H, B);
      for (Eigen::Index t = 0; t < T && share.active(); ++t) {
        share.Product(packed, h.col(t * B).data(), H, gates.col(t * B).data(), G * H, true);
        share.Join();
      }
    }
    const double f = Since(t0);
    const Clock::time_point t1 = Clock::now();
#pragma omp parallel num_threads(a.threads)
    {
      const bptt::StepShare share(H, B);
      for (Eigen::Index t = T - 1; t >= 0 && share.active(); --t) {
        share.Product(packed_t, gates.col(t * B).data(), G * H, dh.data(), H, false);
        share.Join();
      }
    }
    const double b = Since(t1);
    if (r > 0) forward = std::min(forward, f), backward = std::min(backward, b);
  }
  const double flops = 2.0 * G * H * H * B * T;
  return {{"mode", "recurrent"},  {"cell", a.model.cell->name},
          {"hidden", a.model.hidden_size},   {"batch", a.batch},
          {"seq", a.seq},         {"threads", a.threads},
          {"precision", a.precision},
          {"weight_bytes", packed.bf16 ? static_cast<double>(packed.tiles.size()) * sizeof(uint16_t)
                                       : static_cast<double>(packed.panels.size()) * sizeof(float)},
          {"forward_gflops", flops / forward * 1e-9},
          {"backward_gflops", flops / backward * 1e-9},
          {"checksum", static_cast<double>(gates.sum() + dh.sum())}};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    static const std::vector<bptt::OptionSpec<Args>> specs = Specs();
    bptt::cli::CommandLine<Args> cli("bptt_bench MODE [flags]; MODE is train, sample, peak, fma or recurrent", specs,
                                     bptt::kAnyCommand, Args());
    cli.Argument("mode", "train, sample, peak, fma or recurrent");
    if (!cli.ParseOrShowHelp(argc, argv)) return 0;
    Args start;
    start.mode = cli.Argument("mode");
    start.Bit();  // a known mode
    const Args a = cli.Apply(start);
#ifdef BPTT_BENCH_OPENBLAS
    openblas_set_num_threads(a.threads);
#endif
    nlohmann::json out;
    switch (a.Bit()) {
      case kTrain: out = Train(a); break;
      case kSample: out = Sample(a); break;
      case kPeak: out = Peak(a); break;
      case kFma: out = Fma(a); break;
      default: out = Recurrent(a);
    }
    out["isa"] = bptt::IsaName(bptt::ThisCpu().level);
    std::cout << out.dump() << std::endl;
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bptt_bench: " << e.what() << "\n";
    return 1;
  }
}
