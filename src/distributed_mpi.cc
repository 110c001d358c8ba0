// The communicator of an MPI job (distributed.h), on MPI_COMM_WORLD.
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "bptt/error.h"
#include "distributed.h"

namespace bptt {

bool HaveMpi() { return true; }

namespace {

// MPI for the life of the program: MPI_Init on first use, MPI_Finalize at exit. Calls return
// their errors (MPI_ERRORS_RETURN) so that Check can name them; OpenMP threads make no MPI calls.
class MpiSession {
 public:
  static void Join() { static MpiSession session; }

  ~MpiSession() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }

 private:
  MpiSession() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    int provided = 0;
    if (!initialized && MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw Error("MPI_Init failed: this process is not part of an MPI job that can start");
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
};

// The largest count one MPI call is given (MPI counts are int).
constexpr size_t kMaxCount = size_t{1} << 30;

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    MpiSession::Join();
    Check(MPI_Comm_rank(MPI_COMM_WORLD, &rank_), "MPI_Comm_rank");
    Check(MPI_Comm_size(MPI_COMM_WORLD, &size_), "MPI_Comm_size");
    MPI_Comm local;
    Check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
          "MPI_Comm_split_type");
    int local_rank = 0;
    Check(MPI_Comm_size(local, &local_size_), "MPI_Comm_size");
    Check(MPI_Comm_rank(local, &local_rank), "MPI_Comm_rank");
    MPI_Comm_free(&local);
    int leaders = local_rank == 0 ? 1 : 0;
    Check(MPI_Allreduce(MPI_IN_PLACE, &leaders, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD), "MPI_Allreduce");
    machines_ = leaders;
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int length = 0;
    MPI_Get_library_version(version, &length);
    library_.assign(version, static_cast<size_t>(length));
    library_ = library_.substr(0, library_.find_first_of(",\n"));
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int local_size() const override { return local_size_; }
  std::string Describe() const override {
    return std::to_string(size_) + (size_ == 1 ? " rank" : " ranks") + " on " + std::to_string(machines_) +
           (machines_ == 1 ? " machine" : " machines") + " (" + library_ + ")";
  }

  void Sum(std::span<float> values) override { SumAll(values.data(), values.size(), MPI_FLOAT); }
  void Sum(std::span<double> values) override { SumAll(values.data(), values.size(), MPI_DOUBLE); }

  void Broadcast(std::string& bytes) override {
    uint64_t size = bytes.size();
    Check(MPI_Bcast(&size, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "MPI_Bcast");
    bytes.resize(size);
    for (size_t at = 0; at < size; at += kMaxCount)
      Check(MPI_Bcast(bytes.data() + at, static_cast<int>(std::min(kMaxCount, size - at)), MPI_CHAR, 0,
                      MPI_COMM_WORLD),
            "MPI_Bcast");
  }

  void Gather(std::span<const float> local, std::vector<float>& all) override {
    if (local.size() > kMaxCount) throw Error("rank " + std::to_string(rank_) + ": too much to gather in one call");
    const int count = static_cast<int>(local.size());
    std::vector<int> counts(rank_ == 0 ? size_ : 0), offsets;
    Check(MPI_Gather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Gather");
    if (rank_ == 0) {
      offsets.resize(size_);
      size_t total = 0;
      for (int r = 0; r < size_; ++r) {
        offsets[r] = static_cast<int>(total);
        total += static_cast<size_t>(counts[r]);
      }
      if (total > kMaxCount) throw Error("rank 0: too much to gather in one call");
      all.resize(total);
    }
    Check(MPI_Gatherv(local.data(), count, MPI_FLOAT, all.data(), counts.data(), offsets.data(), MPI_FLOAT, 0,
                      MPI_COMM_WORLD),
          "MPI_Gatherv");
  }

  std::vector<uint64_t> AllGather(uint64_t value) override {
    std::vector<uint64_t> all(size_);
    Check(MPI_Allgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD), "MPI_Allgather");
    return all;
  }

  void Barrier() override { Check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier"); }

  [[noreturn]] void Abort(int status) override {
    MPI_Abort(MPI_COMM_WORLD, status);
    std::_Exit(status);  // MPI_Abort does not return; should it, this process still ends
  }

 private:
  void SumAll(void* data, size_t count, MPI_Datatype type) {
    int bytes = 0;
    MPI_Type_size(type, &bytes);
    auto* at = static_cast<char*>(data);
    for (size_t done = 0; done < count; done += kMaxCount) {
      const size_t n = std::min(kMaxCount, count - done);
      Check(MPI_Allreduce(MPI_IN_PLACE, at + done * static_cast<size_t>(bytes), static_cast<int>(n), type, MPI_SUM,
                          MPI_COMM_WORLD),
            "MPI_Allreduce");
    }
  }

  void Check(int code, const char* call) const {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw Error("rank " + std::to_string(rank_) + ": " + call + " failed: " + std::string(text, length) +
                " (has another rank died?)");
  }

  int rank_ = 0, size_ = 1, local_size_ = 1, machines_ = 1;
  std::string library_;
};

}  // namespace

std::unique_ptr<Communicator> OpenMpiCommunicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace bptt
