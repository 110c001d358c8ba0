#include "distributed.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "bptt/error.h"
#include "bptt/trainer.h"

namespace bptt {

// Defined by distributed_mpi.cc, or by distributed_no_mpi.cc in a build without MPI.
std::unique_ptr<Communicator> OpenMpiCommunicator();

namespace {

// This process alone: the sums of one rank are its values.
class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  int local_size() const override { return 1; }
  std::string Describe() const override { return "1 process"; }
  void SetTimeout(double) override {}
  void Sum(std::span<float>) override {}
  void Sum(std::span<double>) override {}
  void Broadcast(std::string&) override {}
  void Gather(std::span<const float> local, std::vector<float>& all) override { all.assign(local.begin(), local.end()); }
  std::vector<uint64_t> AllGather(uint64_t value) override { return {value}; }
  void Barrier() override {}
  [[noreturn]] void Abort(int status) override { std::exit(status); }
};

}  // namespace

std::unique_ptr<Communicator> OpenCommunicator(bool distributed) {
  if (!distributed) return std::make_unique<SingleProcess>();
  return OpenMpiCommunicator();
}

bool LaunchedByMpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

int DefaultThreads(const Communicator& comm) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int allowed = omp_get_num_procs();  // the cores in this process's affinity mask
  return std::max(1, std::min(allowed, cores / std::max(1, comm.local_size())));
}

std::string OnRootForAll(Communicator& comm, const std::function<std::string()>& on_root) {
  // The first byte says how rank 0 fared: '+' and the result, or '-' and the error's message.
  std::string outcome;
  if (comm.rank() == 0) {
    try {
      outcome = "+" + on_root();
    } catch (const std::exception& e) {
      if (comm.size() == 1) throw;
      outcome = std::string("-") + e.what();
    }
  }
  comm.Broadcast(outcome);
  if (outcome.empty() || outcome[0] != '+') throw AgreedError(outcome.empty() ? "rank 0 failed" : outcome.substr(1));
  return outcome.substr(1);
}

uint64_t Fingerprint(std::span<const float> values, uint64_t hash) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
  for (size_t i = 0; i < values.size_bytes(); ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  return hash;
}

uint64_t Fingerprint(std::string_view bytes, uint64_t hash) {
  for (const char c : bytes) hash = (hash ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return hash;
}

void CheckSameOnEveryRank(Communicator& comm, uint64_t fingerprint, const std::string& what) {
  const std::vector<uint64_t> all = comm.AllGather(fingerprint);
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw Error("rank " + std::to_string(r) + "'s " + what + " differ from rank 0's: the ranks no longer train " +
                  "one model");
}

void CheckSameOptions(Communicator& comm, const nlohmann::json& options) {
  const auto text = [](const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  std::string mine = text(options);
  const std::vector<uint64_t> all = comm.AllGather(Fingerprint(mine));
  std::vector<int> differ;
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0]) differ.push_back(static_cast<int>(r));
  if (differ.empty()) return;
  std::string root = mine;
  comm.Broadcast(root);  // every rank names what it holds that rank 0 does not
  const std::string ranks = [&] {
    std::string s;
    for (int r : differ) s += (s.empty() ? "" : ", ") + std::to_string(r);
    return (differ.size() == 1 ? "rank " : "ranks ") + s;
  }();
  std::string detail;
  if (comm.rank() != 0 && root != mine) {
    const nlohmann::json theirs = nlohmann::json::parse(root);
    for (const auto& [flag, value] : options.items()) {
      const nlohmann::json other = theirs.contains(flag) ? theirs.at(flag) : nlohmann::json();
      if (other == value) continue;
      detail = ": --" + flag + " is " + text(value) + " on rank " + std::to_string(comm.rank()) + " and " +
               text(other) + " on rank 0";
      break;
    }
  } else if (comm.rank() == 0) {
    detail = " (the differing rank names the option)";
  }
  throw AgreedError("the ranks were given different options: " + ranks + (differ.size() == 1 ? " differs" : " differ") +
                    " from rank 0" + detail + "; give every rank the same command line");
}

double SumOverRanks(Communicator& comm, ModelParams<float>& grads, StepSums& sums, std::vector<float>& flat) {
  const auto count = static_cast<size_t>(grads.Count());
  flat.resize(count + 4);
  size_t at = 0;
  grads.ForEach([&](const std::string&, const Mat<float>& m) {
    std::copy(m.data(), m.data() + m.size(), flat.data() + at);
    at += static_cast<size_t>(m.size());
  });
  flat[count] = static_cast<float>(sums.loss);
  flat[count + 1] = sums.stop ? 1.0f : 0.0f;
  flat[count + 2] = sums.out_of_time ? 1.0f : 0.0f;
  flat[count + 3] = static_cast<float>(sums.seconds);
  const auto start = std::chrono::steady_clock::now();
  comm.Sum(std::span<float>(flat));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  at = 0;
  grads.ForEach([&](const std::string&, Mat<float>& m) {
    std::copy(flat.data() + at, flat.data() + at + m.size(), m.data());
    at += static_cast<size_t>(m.size());
  });
  sums.loss = flat[count];
  sums.stop = flat[count + 1] > 0;
  sums.out_of_time = flat[count + 2] > 0;
  sums.seconds = flat[count + 3];
  return seconds;
}

State<float> GatherState(Communicator& comm, const ModelConfig& config, const State<float>& local, int batch) {
  if (comm.size() == 1) return local;
  State<float> whole = State<float>::Zeros(config, batch);
  std::vector<float> all;
  for (int l = 0; l < config.layers; ++l) {
    for (auto [part, to] : {std::pair{&local.h, &whole.h}, std::pair{&local.c, &whole.c}}) {
      if (part->empty()) continue;
      const Mat<float>& m = (*part)[l];
      comm.Gather({m.data(), static_cast<size_t>(m.size())}, all);
      if (comm.rank() == 0) (*to)[l] = Eigen::Map<const Mat<float>>(all.data(), m.rows(), batch);
    }
  }
  return whole;
}

uint64_t WeightsFingerprint(const ModelParams<float>& params, const OptimizerState<float>* optimizer) {
  uint64_t hash = Fingerprint(std::span<const float>{});
  const auto add = [&hash](const Mat<float>& m) { hash = Fingerprint({m.data(), static_cast<size_t>(m.size())}, hash); };
  params.ForEach([&](const std::string&, const Mat<float>& m) { add(m); });
  if (optimizer != nullptr)
    for (const auto* slots : {&optimizer->slot1, &optimizer->slot2})
      for (const Mat<float>& m : *slots) add(m);
  return hash;
}

}  // namespace bptt
