// bptt train: the command-line front end of trainer.h.
#include <unistd.h>

#include <boost/program_options.hpp>
#include <csignal>
#include <iostream>

#include "bptt/error.h"
#include "bptt/trainer.h"
#include "commands.h"

namespace po = boost::program_options;

namespace bptt::cli {

namespace {

void OnSignal(int) { RequestStop(); }

template <typename T, typename Parse>
T Parsed(const std::string& flag, const std::string& value, Parse parse, const std::string& choices) {
  const auto v = parse(value);
  if (!v) throw Error("--" + flag + " '" + value + "' is not one of " + choices);
  return *v;
}

}  // namespace

int Train(int argc, char** argv) {
  TrainOptions o;
  const TrainOptions d;
  std::string unit = "grapheme", cell = "lstm", optimizer = "adam", init = "orthogonal", on_invalid = "error";
  std::string resume, on_divergence = "stop";
  bool no_normalize = false;
  po::options_description data("Data"), model("Model"), optim("Optimisation"), schedule("Schedule and output");
  data.add_options()
      ("corpus", po::value(&o.corpus)->multitoken(), "text file or directory of text files (repeatable)")
      ("unit", po::value(&unit)->default_value(unit), "symbol unit: grapheme, codepoint, byte or word")
      ("no-normalize", po::bool_switch(&no_normalize), "do not NFC-normalise the text")
      ("max-vocab", po::value(&o.tokenizer.max_vocab)->default_value(d.tokenizer.max_vocab), "word unit: keep the most frequent words (0 = all)")
      ("on-invalid", po::value(&on_invalid)->default_value(on_invalid), "invalid UTF-8: error or replace (with U+FFFD)")
      ("val-frac", po::value(&o.val_frac)->default_value(d.val_frac), "fraction of the corpus (at its end) for validation")
      ("test-frac", po::value(&o.test_frac)->default_value(d.test_frac), "fraction after the validation part held out for testing");
  model.add_options()
      ("cell", po::value(&cell)->default_value(cell), "rnn-tanh, rnn-sigmoid, rnn-relu, lstm or gru")
      ("layers", po::value(&o.model.layers)->default_value(d.model.layers), "stacked recurrent layers (L)")
      ("hidden", po::value(&o.model.hidden_size)->default_value(d.model.hidden_size), "hidden units per layer (H)")
      ("embed", po::value(&o.model.embed_size)->default_value(d.model.embed_size), "embedding width (0 = one-hot input)")
      ("dropout", po::value(&o.model.dropout)->default_value(d.model.dropout), "dropout probability between layers")
      ("init", po::value(&init)->default_value(init), "uniform, pytorch, xavier, he, orthogonal or identity")
      ("init-scale", po::value(&o.init.scale)->default_value(d.init.scale), "uniform bound or orthogonal/identity gain (0 = the scheme's default)")
      ("forget-bias", po::value(&o.init.forget_bias)->default_value(d.init.forget_bias), "LSTM forget-gate bias");
  optim.add_options()
      ("optimizer", po::value(&optimizer)->default_value(optimizer), "sgd, adagrad, rmsprop or adam")
      ("lr", po::value(&o.lr)->default_value(d.lr), "learning rate")
      ("lr-decay", po::value(&o.lr_decay)->default_value(d.lr_decay), "multiply the learning rate by this after each epoch...")
      ("lr-decay-after", po::value(&o.lr_decay_after)->default_value(d.lr_decay_after), "...once this many epochs are done")
      ("momentum", po::value(&o.optimizer.momentum)->default_value(d.optimizer.momentum), "SGD momentum")
      ("nesterov", po::bool_switch(&o.optimizer.nesterov), "SGD: Nesterov momentum")
      ("rms-decay", po::value(&o.optimizer.rms_decay)->default_value(d.optimizer.rms_decay), "RMSProp decay of the mean square")
      ("weight-decay", po::value(&o.optimizer.weight_decay)->default_value(d.optimizer.weight_decay), "decoupled weight decay of weight matrices")
      ("clip-norm", po::value(&o.clip_norm)->default_value(d.clip_norm), "clip the global gradient L2 norm to this (0 = off)")
      ("clip-value", po::value(&o.clip_value)->default_value(d.clip_value), "clamp each gradient element to +-this (0 = off)")
      ("seq-len", po::value(&o.seq_len)->default_value(d.seq_len), "timesteps per chunk of truncated BPTT (T)")
      ("batch", po::value(&o.batch)->default_value(d.batch), "parallel streams (B)")
      ("seed", po::value(&o.seed)->default_value(d.seed), "random seed (initialisation, dropout)")
      ("threads", po::value(&o.threads)->default_value(d.threads), "threads (0 = every core)");
  schedule.add_options()
      ("max-steps", po::value(&o.max_steps)->default_value(d.max_steps), "stop after this many steps (0 = no limit)")
      ("max-epochs", po::value(&o.max_epochs)->default_value(d.max_epochs), "stop after this many epochs (0 = no limit; 50 when no limit is set)")
      ("time-budget", po::value(&o.time_budget)->default_value(d.time_budget), "stop after this many seconds (0 = no limit)")
      ("eval-every", po::value(&o.eval_every)->default_value(d.eval_every), "steps between validations")
      ("checkpoint-every", po::value(&o.checkpoint_every)->default_value(d.checkpoint_every), "steps between checkpoints")
      ("log-every", po::value(&o.log_every)->default_value(d.log_every), "steps between progress lines when not on a terminal")
      ("decay-every", po::value(&o.decay_every)->default_value(d.decay_every),
       "record the gradient-decay profile every N steps into DIR/decay_train.csv and DIR/heatmap.svg (0 = off)")
      ("decay-steps", po::value(&o.decay_steps)->default_value(d.decay_steps), "timesteps of the decay probe")
      ("decay-batch", po::value(&o.decay_batch)->default_value(d.decay_batch), "sequences of the decay probe")
      ("on-divergence", po::value(&on_divergence)->default_value(on_divergence),
       "on a non-finite loss, gradient or weight: stop, or rollback (reload latest, halve the learning rate)")
      ("max-rollbacks", po::value(&o.max_rollbacks)->default_value(d.max_rollbacks), "rollbacks before stopping")
      ("out", po::value(&o.out), "run directory (default: a new directory under models/)")
      ("resume", po::value(&resume), "continue the run in this directory from its latest.safetensors")
      ("help", "show this help");
  po::options_description all("bptt train --corpus PATH [--out DIR] [options]\n   or: bptt train --resume DIR [--max-steps N | --max-epochs N | --time-budget S]");
  all.add(data).add(model).add(optim).add(schedule);
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(all).run(), vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << all << "\n";
    return 0;
  }

  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  const bool live = isatty(STDERR_FILENO) != 0;
  TrainResult result;
  if (!resume.empty()) {
    for (const char* flag : {"corpus", "cell", "layers", "hidden", "embed", "unit", "out"})
      if (vm.count(flag) && !vm[flag].defaulted())
        throw Error(std::string("--") + flag + " cannot be changed on --resume (the run's options are in its checkpoint)");
    result = Resume(resume, o, std::cerr, live);
  } else {
    o.tokenizer.unit = Parsed<Unit>("unit", unit, ParseUnit, "grapheme, codepoint, byte, word");
    o.tokenizer.normalize = !no_normalize;
    if (on_invalid != "error" && on_invalid != "replace") throw Error("--on-invalid must be error or replace");
    o.tokenizer.on_invalid = on_invalid == "replace" ? OnInvalid::kReplace : OnInvalid::kError;
    if (on_divergence != "stop" && on_divergence != "rollback") throw Error("--on-divergence must be stop or rollback");
    o.rollback_on_divergence = on_divergence == "rollback";
    o.model.cell = Parsed<CellType>("cell", cell, ParseCell, "rnn-tanh, rnn-sigmoid, rnn-relu, lstm, gru");
    o.optimizer.type = Parsed<OptimizerType>("optimizer", optimizer, ParseOptimizer, "sgd, adagrad, rmsprop, adam");
    o.init.scheme = Parsed<InitScheme>("init", init, ParseInit, "uniform, pytorch, xavier, he, orthogonal, identity");
    if (o.out.empty()) {
      const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
      char stamp[32];
      std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
      o.out = std::string("models/") + cell + "-" + stamp;
    }
    result = bptt::Train(o, std::cerr, live);
  }

  switch (result.end) {
    case TrainEnd::kDiverged:
      std::cerr << "bptt train: " << result.message << "\n";
      return 3;
    case TrainEnd::kInterrupted:
      std::cerr << "bptt train: stopped at step " << result.steps << "; saved " << (result.dir / "latest.safetensors").string()
                << "\nresume with: bptt train --resume " << result.dir.string() << "\n";
      return 0;
    case TrainEnd::kFinished:
      std::cerr << "bptt train: finished at step " << result.steps;
      if (result.best_val_loss > 0) std::cerr << "; best validation loss " << result.best_val_loss << " nats";
      std::cerr << "\ncheckpoints in " << result.dir.string() << "/ (latest.safetensors, best.safetensors)"
                << "\nsample with: bptt sample " << (result.dir / "best.safetensors").string() << "\n";
      return 0;
  }
  return 0;
}

}  // namespace bptt::cli
