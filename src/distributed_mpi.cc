// The communicator of an MPI job (distributed.h), on MPI_COMM_WORLD.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <sstream>
#include <thread>

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

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

// Tags of the liveness questions on the watch communicator: "are you there?" and its answer.
constexpr int kAsk = 1, kAnswer = 2;

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
    Check(MPI_Comm_dup(MPI_COMM_WORLD, &watch_), "MPI_Comm_dup");
    MPI_Comm_set_errhandler(watch_, MPI_ERRORS_RETURN);
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

  void SetTimeout(double seconds) override { timeout_ = seconds; }

  void Sum(std::span<float> values) override { SumAll(values.data(), values.size(), MPI_FLOAT); }
  void Sum(std::span<double> values) override { SumAll(values.data(), values.size(), MPI_DOUBLE); }

  void Broadcast(std::string& bytes) override {
    uint64_t size = bytes.size();
    MPI_Request request;
    Check(MPI_Ibcast(&size, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD, &request), "MPI_Ibcast");
    Wait(request, "MPI_Bcast");
    bytes.resize(size);
    for (size_t at = 0; at < size; at += kMaxCount) {
      Check(MPI_Ibcast(bytes.data() + at, static_cast<int>(std::min(kMaxCount, size - at)), MPI_CHAR, 0,
                       MPI_COMM_WORLD, &request),
            "MPI_Ibcast");
      Wait(request, "MPI_Bcast");
    }
  }

  void Gather(std::span<const float> local, std::vector<float>& all) override {
    if (local.size() > kMaxCount) throw Error("rank " + std::to_string(rank_) + ": too much to gather in one call");
    const int count = static_cast<int>(local.size());
    std::vector<int> counts(rank_ == 0 ? size_ : 0), offsets;
    MPI_Request request;
    Check(MPI_Igather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, 0, MPI_COMM_WORLD, &request), "MPI_Igather");
    Wait(request, "MPI_Gather");
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
    Check(MPI_Igatherv(local.data(), count, MPI_FLOAT, all.data(), counts.data(), offsets.data(), MPI_FLOAT, 0,
                       MPI_COMM_WORLD, &request),
          "MPI_Igatherv");
    Wait(request, "MPI_Gatherv");
  }

  std::vector<uint64_t> AllGather(uint64_t value) override {
    std::vector<uint64_t> all(size_);
    MPI_Request request;
    Check(MPI_Iallgather(&value, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD, &request),
          "MPI_Iallgather");
    Wait(request, "MPI_Allgather");
    return all;
  }

  void Barrier() override {
    MPI_Request request;
    Check(MPI_Ibarrier(MPI_COMM_WORLD, &request), "MPI_Ibarrier");
    Wait(request, "MPI_Barrier");
  }

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
      MPI_Request request;
      Check(MPI_Iallreduce(MPI_IN_PLACE, at + done * static_cast<size_t>(bytes), static_cast<int>(n), type, MPI_SUM,
                           MPI_COMM_WORLD, &request),
            "MPI_Iallreduce");
      Wait(request, "MPI_Allreduce");
    }
  }

  // Completes `request`, answering the other ranks' liveness questions meanwhile; after timeout_
  // seconds, finds out which ranks are silent and throws bptt::Error naming them.
  void Wait(MPI_Request& request, const char* call) {
    const Clock::time_point start = Clock::now();
    for (uint64_t spin = 0;; ++spin) {
      int done = 0;
      Check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), call);
      if (done) return;
      if (spin % 64 != 0) continue;
      AnswerQuestions();
      const double waited = Seconds(start);
      if (timeout_ > 0 && waited > timeout_) NameTheSilent(call);
      if (waited > 1e-3) std::this_thread::yield();  // a rank waiting for another leaves it the core
    }
  }

  // Answers every "are you there?" that has come (the asker is polling for the answer).
  void AnswerQuestions() {
    while (true) {
      int asked = 0;
      MPI_Status status;
      Check(MPI_Iprobe(MPI_ANY_SOURCE, kAsk, watch_, &asked, &status), "MPI_Iprobe");
      if (!asked) return;
      uint64_t question = 0;
      Check(MPI_Recv(&question, 1, MPI_UINT64_T, status.MPI_SOURCE, kAsk, watch_, MPI_STATUS_IGNORE), "MPI_Recv");
      Check(MPI_Send(&question, 1, MPI_UINT64_T, status.MPI_SOURCE, kAnswer, watch_), "MPI_Send");
    }
  }

  // After a collective timed out: asks every other rank whether it is there (a rank waiting in
  // any collective answers at once) and throws naming those that do not answer within a grace.
  [[noreturn]] void NameTheSilent(const char* call) {
    question_ = (static_cast<uint64_t>(rank_) << 40) | ++questions_asked_;
    std::vector<MPI_Request> asks(size_, MPI_REQUEST_NULL);
    for (int r = 0; r < size_; ++r)
      if (r != rank_) Check(MPI_Isend(&question_, 1, MPI_UINT64_T, r, kAsk, watch_, &asks[r]), "MPI_Isend");
    std::vector<bool> answered(size_, false);
    answered[rank_] = true;
    const double grace = std::min(timeout_, 5.0);
    const Clock::time_point start = Clock::now();
    while (std::count(answered.begin(), answered.end(), false) > 0 && Seconds(start) < grace) {
      AnswerQuestions();
      int came = 0;
      MPI_Status status;
      Check(MPI_Iprobe(MPI_ANY_SOURCE, kAnswer, watch_, &came, &status), "MPI_Iprobe");
      if (!came) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      uint64_t answer = 0;
      Check(MPI_Recv(&answer, 1, MPI_UINT64_T, status.MPI_SOURCE, kAnswer, watch_, MPI_STATUS_IGNORE), "MPI_Recv");
      if (answer == question_) answered[status.MPI_SOURCE] = true;
    }
    for (MPI_Request& r : asks)
      if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
    std::string silent;
    int count = 0;
    for (int r = 0; r < size_; ++r)
      if (!answered[r]) silent += (count++ > 0 ? ", " : "") + std::to_string(r);
    std::ostringstream waited;
    waited << timeout_;
    const std::string what = std::string(call) + " did not complete within " + waited.str() +
                             " s (--collective-timeout): ";
    if (count == 0)
      throw Error(what + "every rank answers, so the ranks are in different collectives (a bptt bug)");
    throw Error(what + (count == 1 ? "rank " : "ranks ") + silent + (count == 1 ? " does" : " do") +
                " not answer (stopped, hung, or cut off from the others)");
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
  MPI_Comm watch_ = MPI_COMM_NULL;  // a duplicate of MPI_COMM_WORLD for the liveness questions
  double timeout_ = 0;              // seconds; 0 = wait forever
  uint64_t question_ = 0;           // the last question asked (its send buffer)
  uint64_t questions_asked_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> OpenMpiCommunicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace bptt
