#include "distributed.h"

#include <omp.h>

#include <algorithm>
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

uint64_t Fingerprint(std::span<const float> values, uint64_t hash) {
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
  for (size_t i = 0; i < values.size_bytes(); ++i) hash = (hash ^ bytes[i]) * 0x100000001b3ull;
  return hash;
}

void CheckSameOnEveryRank(Communicator& comm, uint64_t fingerprint, const std::string& what) {
  const std::vector<uint64_t> all = comm.AllGather(fingerprint);
  for (size_t r = 1; r < all.size(); ++r)
    if (all[r] != all[0])
      throw Error("rank " + std::to_string(r) + "'s " + what + " differ from rank 0's: the ranks no longer train " +
                  "one model");
}

}  // namespace bptt
