// Evaluation: how well a model predicts held-out text, in nats per symbol.
//
// A range of n symbols is read as B contiguous streams of Ls = (n - 1) / B inputs (BatchStream
// with allow_partial, corpus.h), T timesteps at a time, with the state carried from chunk to
// chunk and no dropout. Every input predicts the symbol after it, so B * Ls symbols are scored:
//
//   loss = (1 / (B Ls)) sum_{b, t} -log softmax(z_{b,t})[y_{b,t}]        nats per symbol
//   bits per symbol = loss / ln 2,  perplexity = exp(loss)
//
// The trainer's validation and `bptt eval` both use EvaluateLoss. For a file, EncodeFile cuts
// it into symbols with the checkpoint's vocabulary and counts the ones the vocabulary lacks:
//
//   EncodedFile file = EncodeFile(path, checkpoint.vocab);
//   TextEvaluation result = EvaluateFile(config, params, std::move(file), vocab, 32, 256);
//
// EvaluateFileStepwise scores the same text the way `bptt sample` runs the model instead.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "bptt/corpus.h"
#include "bptt/model.h"
#include "bptt/sampler.h"
#include "bptt/vocab.h"

namespace bptt {

// Mean nats per symbol over `range` of `corpus`, laid out as B streams and run T timesteps at
// a time (the state carried, no dropout). Throws bptt::Error if the range is shorter than
// B + 1 symbols.
double EvaluateLoss(const ModelConfig& config, const ModelParams<float>& params,
                    const EncodedCorpus& corpus, SymbolRange range, int B, int T);

// A text file as ids of a given vocabulary.
struct EncodedFile {
  std::vector<int32_t> ids;                  // the symbols found in the vocabulary, in order
  uint64_t unknown = 0;                      // symbols not in the vocabulary: left out, or
                                             //   encoded as "<unk>" when the vocabulary has it
  std::vector<std::string> unknown_symbols;  // the distinct ones, in order of first appearance
                                             //   (at most kMaxListed)
  static constexpr size_t kMaxListed = 20;
};

// Cuts the file into symbols with the vocabulary's tokenizer options (Segmenter, reading it in
// pieces) and looks each up with Vocab::Find. Throws bptt::Error naming the path if it cannot
// be read or is not valid UTF-8 (unless the vocabulary replaces invalid bytes).
EncodedFile EncodeFile(const std::filesystem::path& path, const Vocab& vocab);

struct TextEvaluation {
  double nats_per_symbol = 0;
  double bits_per_symbol = 0;  // nats / ln 2 (bits per character for a character vocabulary)
  double perplexity = 0;       // exp(nats)
  uint64_t symbols = 0;        // symbols scored: B * Ls (see above)
  uint64_t unknown = 0;        // as in EncodedFile
  std::vector<std::string> unknown_symbols;
};

// Evaluates encoded text with EvaluateLoss: T timesteps per chunk and B streams, or fewer so
// that each stream has at least T inputs (one stream for a text of T symbols or less). Throws
// bptt::Error if fewer than two symbols remain.
TextEvaluation EvaluateFile(const ModelConfig& config, const ModelParams<float>& params, EncodedFile file,
                            const Vocab& vocab, int B, int T);

// Evaluates encoded text as the sampler steps (Sampler::Score): one stream from the zero state,
// one symbol at a time, with `precision` products; scores n - 1 symbols. What a reduced
// sampling precision costs is the difference from kFloat32. Throws bptt::Error if fewer than
// two symbols remain.
TextEvaluation EvaluateFileStepwise(const ModelConfig& config, ModelParams<float> params, EncodedFile file,
                                    const Vocab& vocab, SamplePrecision precision);

}  // namespace bptt
