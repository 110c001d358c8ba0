// The entry points of trainer.h: a run set up on every rank — its options checked before
// anything slow, the ranks agreed on them, rank 0's run directory locked, the data read and the
// memory counted — and handed to the training loop (train_loop.h).
#include "bptt/trainer.h"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include "bptt/checkpoint.h"
#include "bptt/error.h"
#include "bptt/task.h"
#include "distributed.h"
#include "run_directory.h"
#include "train_data.h"
#include "train_loop.h"
#include "trials.h"

namespace bptt {

namespace fs = std::filesystem;

uint64_t AvailableBytes() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

namespace {

// Refuses a model that cannot train in this machine's memory: this rank's share of the streams,
// times the ranks that share the machine. Before the data is read (`sizes_known` false: the
// smallest vocabulary stands in for the corpus's) a --memory-budget counts its least plan, and
// is planned once the data gives the model its sizes, so that a budget that does not fit is
// refused with what the real model needs.
void CheckMemory(const TrainOptions& o, const ModelConfig& model, int T, uint64_t evaluation_bytes,
                 const Communicator& comm, StreamShare share, bool sizes_known = true) {
  const int slots = OptimizerSlots(o.optimizer);
  const uint64_t training =
      o.memory_budget == 0 ? EstimateTrainingBytes(model, T, share.size(), slots, o.precision, o.checkpoint_steps)
      : sizes_known        ? PlanMemory(model, T, share.size(), slots, o.precision, o.memory_budget).bytes
                           : EstimateTrainingBytes(model, T, share.size(), slots, o.precision, 1, 1);
  const uint64_t need = (training + evaluation_bytes) * static_cast<uint64_t>(comm.local_size());
  const uint64_t have = AvailableBytes();
  if (have > 0 && need > have)
    throw Error("the model needs about " + std::to_string(need >> 20) + " MiB to train but only " +
                std::to_string(have >> 20) + " MiB are available; reduce --hidden, --layers, --batch or " +
                (o.task.empty() ? "--seq-len" : "--T (the test set runs up to 256 sequences at a time: --test-size)") +
                (o.checkpoint_steps == 0 && o.memory_budget == 0
                     ? ", or keep fewer steps' caches with --checkpoint-steps auto or --memory-budget"
                     : ""));
}

// What can be checked before the data is read (a corpus may take minutes to encode): how the
// run divides between the ranks, the model with the sizes the data will give it (a corpus's
// vocabulary is at least one symbol, a task's shape is known), and its memory at that size.
void CheckBeforeData(const TrainOptions& o, const Communicator& comm) {
  if (o.memory_budget != 0 && o.checkpoint_steps != 0)
    throw Error("--memory-budget chooses the segments itself: give it or --checkpoint-steps, not both");
  if (comm.size() > 1 && !o.task.empty())
    throw Error("a task trains in one process: distributed training takes a corpus (bptt train)");
  if (o.batch < comm.size())
    throw Error("--batch " + std::to_string(o.batch) + " is fewer streams than the " + std::to_string(comm.size()) +
                " ranks: each rank needs at least one");
  if (o.credit != Credit::kBptt) {
    const std::string credit = "--credit " + std::string(CreditName(o.credit));
    if (const std::string why = CreditRefusal(o.credit, o.model); !why.empty()) throw Error("--credit: " + why);
    if (o.feedback != Feedback::kBptt)
      throw Error(credit + " computes the gradient itself: --feedback " + std::string(FeedbackName(o.feedback)) +
                  " applies to bptt");
    if (o.checkpoint_steps != 0) throw Error(credit + " keeps no caches for --checkpoint-steps to bound");
    if (o.memory_budget != 0) throw Error(credit + " keeps no caches for --memory-budget to bound");
    if (comm.size() > 1) throw Error(credit + " trains in one process");
    // Its forward passes draw no masks and its gradient holds no penalty.
    if (const auto on = TrainingRegularisers(o.model); !on.empty())
      throw Error(credit + " trains without the regularisers of bptt: --" + std::string(on[0].first) +
                  " applies to bptt");
  }
  if (o.feedback == Feedback::kDfa && o.model.embed_size > 0)
    throw Error("--feedback dfa sends the error to the layers, not to an embedding: use one-hot input (--embed 0)");
  ModelConfig model = o.model;
  int T = o.seq_len;
  uint64_t evaluation_bytes = 0;  // a corpus's: small at a vocabulary of one
  if (o.sequence_data()) {  // the sizes come with the data, which is read next
    model.vocab_size = 0;
    model.input_size = model.output_size = 1;
    model.embed_size = 0;
  } else if (o.task.empty()) {
    model.vocab_size = model.output_size = 1;
    model.input_size = 0;
  } else {
    const std::unique_ptr<Task> task = Task::Make(o.task, o.task_length);
    const TaskShape shape = task->shape();
    model.vocab_size = shape.D > 0 ? 0 : shape.V();
    model.input_size = shape.D;
    model.head = shape.head;
    model.output_size = shape.O;
    T = task->max_length();
    model.Validate();
    evaluation_bytes = TaskEvaluationBytes(model, T, o.test_size);
  }
  model.Validate();
  CheckMemory(o, model, T, evaluation_bytes, comm, StreamShare::OfRank(o.batch, comm.rank(), comm.size()),
              !o.task.empty());
}

// The options every rank must be given alike, by flag: all but --threads (machines may differ).
nlohmann::json AgreedOptions(const TrainOptions& o) {
  nlohmann::json j = {{"task", o.task}};
  for (const auto& spec : TrainOptionSpecs())
    if (spec.flag != "threads") j[std::string(spec.flag)] = spec.get(o);
  return j;
}

// A new run directory when none is given: models/CELL-YYYYmmdd-HHMMSS (a task's name, or a
// sequence model's head, before the cell), with -2, -3, ... when that is taken.
std::string NewRunDirectory(const TrainOptions& o) {
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
  const std::string what = o.sequence_data() ? std::string(SequenceHeadName(o.sequences.head)) : o.task;
  const std::string name =
      "models/" + (what.empty() ? "" : what + "-") + std::string(o.model.cell->name) + "-" + stamp;
  std::string out = name;
  for (int k = 2; fs::exists(out); ++k) out = name + "-" + std::to_string(k);
  return out;
}

// Runs `train` on this rank. In a distributed run an error that the ranks did not agree on ends
// every rank's process (the others may be waiting for this one), after saying which rank failed
// and why.
template <typename F>
TrainResult Guarded(Communicator& comm, std::ostream& errors, F&& train) {
  try {
    return train();
  } catch (const AgreedError&) {
    throw;
  } catch (const std::exception& e) {
    if (comm.size() == 1) throw;
    errors << "bptt train: rank " << comm.rank() << " of " << comm.size() << ": " << e.what() << "\n" << std::flush;
    comm.Abort(1);
    throw;  // not reached: Abort ends the process
  }
}

// The run in `o.out`, from the seed or from `resume`, once the directory is rank 0's.
TrainResult TrainIn(TrainOptions o, Communicator& comm, RunDirectory* dir, const Checkpoint* resume, std::ostream& log,
                    bool live, const TrainHooks& hooks) {
  const bool root = comm.rank() == 0;
  std::ostream quiet(nullptr);  // the log of the ranks other than 0
  std::ostream& out = root ? log : quiet;
  const StreamShare share = StreamShare::OfRank(o.batch, comm.rank(), comm.size());
  const int threads = o.threads > 0 ? o.threads : DefaultThreads(comm);
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  if (comm.size() > 1 && cores > 0 && comm.local_size() * threads > cores)
    out << "bptt train: warning: " << comm.local_size() << " ranks x " << threads << " threads on a machine of "
        << cores << " cores oversubscribe it; leave --threads at 0 for cores / ranks\n";
  if (comm.size() > 1)
    out << "bptt train: distributed over " << comm.Describe() << ", " << threads
        << (threads == 1 ? " thread" : " threads") << " per rank\n";

  const std::unique_ptr<TrainData> data = o.sequence_data() ? MakeSequenceData(o, comm, share)
                                          : o.task.empty()    ? MakeCorpusData(o, o.out, resume, out, comm, share)
                                                              : MakeTaskData(o);
  data->Shape(o.model);
  o.model.Validate();
  CheckMemory(o, o.model, data->timesteps(), data->EvaluationBytes(o.model), comm, share);
  if (o.max_steps == 0 && o.max_epochs == 0 && o.time_budget == 0 && o.max_sequences == 0 && o.task.empty())
    o.max_epochs = 50;
  comm.SetTimeout(o.collective_timeout);  // from here on a rank that stops answering ends the job
  const RunSetup setup{o, &comm, share, data.get(), dir, threads};
  return RunTrainingLoop(setup, resume, out, live && root, hooks);
}

}  // namespace

TrainResult Train(TrainOptions options, std::ostream& log, bool live, const TrainHooks& hooks) {
  ClearStopRequest();
  options.Validate();
  const std::unique_ptr<Communicator> comm = OpenCommunicator(options.distributed);
  return Guarded(*comm, log, [&] {
    CheckSameOptions(*comm, AgreedOptions(options));
    // Rank 0 checks, chooses and locks the directory; the others learn its name, or its error.
    std::unique_ptr<RunDirectory> dir;
    options.out = OnRootForAll(*comm, [&] {
      // Refused for a new run only: a run that began with it resumes as it was.
      if (options.model.dropout > 0 && options.model.layers < 2)
        throw Error("--dropout drops units between stacked layers, and --layers 1 has none: use --output-dropout "
                    "(before the head), --input-dropout or --recurrent-dropout");
      CheckBeforeData(options, *comm);
      const std::string out = options.out.empty() ? NewRunDirectory(options) : options.out;
      dir = std::make_unique<RunDirectory>(out, options.force ? RunDirectory::kReplace : RunDirectory::kNew, log);
      return out;
    });
    return TrainIn(options, *comm, dir.get(), nullptr, log, live, hooks);
  });
}

TrainResult Resume(const fs::path& dir, const nlohmann::json& given, std::ostream& log, bool live,
                   const TrainHooks& hooks, std::shared_ptr<const SequenceArrays> arrays) {
  ClearStopRequest();
  if (fs::exists(dir / "trials.json")) return ResumeTrials(dir, given, log, live, hooks);
  const fs::path path = dir / "latest.safetensors";
  if (!fs::is_directory(dir)) throw Error(path.string() + ": no checkpoint to resume from");
  const nlohmann::json distributed = given.contains("distributed") ? given.at("distributed") : nlohmann::json(false);
  const std::unique_ptr<Communicator> comm = OpenCommunicator(distributed.is_boolean() && distributed.get<bool>());
  return Guarded(*comm, log, [&] {
    // The checkpoint and the options it gives with `given` applied; rank 0 reads them with the
    // directory locked, the others once rank 0 found them good.
    std::optional<Checkpoint> ck;
    TrainOptions o;
    const auto read = [&] {
      ck = LoadCheckpoint(path, CheckpointUse::kResume);
      o = ApplyOnResume(TrainOptionsFromJson(ck->training->options, path.string()), given);
      o.out = dir.string();
      if (o.sequences.data == kArraysData) o.arrays = arrays;
      o.Validate();
      CheckBeforeData(o, *comm);
    };
    std::unique_ptr<RunDirectory> owned;
    OnRootForAll(*comm, [&] {
      owned = std::make_unique<RunDirectory>(dir, RunDirectory::kResume, log);
      if (!fs::exists(path)) throw Error(path.string() + ": no checkpoint to resume from");
      read();
      return std::string();
    });
    if (comm->rank() != 0) read();
    CheckSameOptions(*comm, AgreedOptions(o));
    return TrainIn(o, *comm, owned.get(), &*ck, log, live, hooks);
  });
}


}  // namespace bptt
