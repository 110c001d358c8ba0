// Distributed training: the N processes (ranks) of an MPI job that train one model together,
// data parallel. Every rank holds the same weights and the share StreamShare::OfRank(B, rank, N)
// of the B streams of each batch (batch.h); after its backward pass each rank holds the sums of
// its own positions' gradients (the loss divides by the whole batch's positions, loss.h), one
// sum over the ranks gives every rank the whole batch's gradient, and every rank takes the same
// optimizer step. Rank 0 alone writes the run directory.
//
// Communicator is the little of MPI that the trainer needs: sums, a broadcast and a gather to
// rank 0, each on one flat buffer. OpenCommunicator(false) is this process alone, where each
// operation is a copy or nothing; OpenCommunicator(true) joins the MPI job of this process's
// launcher (MPI_Init on first use, MPI_Finalize when the program ends). A failing MPI call
// throws bptt::Error naming the call and the rank. A rank that dies ends the job: mpirun
// notices and kills the others, naming the rank (docs/distributed.md). A rank that hangs is
// found by the others' timeout (SetTimeout): a collective that has not completed after that
// long asks every rank whether it is alive, and throws bptt::Error naming those that do not
// answer.
//
//   std::unique_ptr<Communicator> comm = OpenCommunicator(options.distributed);
//   comm->SetTimeout(300);
//   comm->Sum(flat_gradients);   // on every rank: the sums over the ranks, bit for bit alike
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bptt/error.h"
#include "bptt/model.h"
#include "bptt/optimizer.h"

namespace bptt {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;        // N
  virtual int local_size() const = 0;  // the ranks on this machine (sharing its cores)
  virtual std::string Describe() const = 0;  // "4 ranks on 2 machines (Open MPI v4.1.4)"

  // Seconds each collective below may wait for the other ranks before it throws bptt::Error
  // naming the ranks that did not come (those that do not answer when asked); 0 = forever, the
  // setting until it is called (rank 0 may take long to encode a corpus while the others wait).
  virtual void SetTimeout(double seconds) = 0;

  // Replaces `values` on every rank by their element-wise sums over the ranks, the same on
  // every rank.
  virtual void Sum(std::span<float> values) = 0;
  virtual void Sum(std::span<double> values) = 0;
  // Every rank receives rank 0's `bytes`.
  virtual void Broadcast(std::string& bytes) = 0;
  // Rank 0 receives every rank's `local` one after the other in rank order (sizes may differ);
  // `all` is left alone on the other ranks.
  virtual void Gather(std::span<const float> local, std::vector<float>& all) = 0;
  // Every rank's value, in rank order, on every rank.
  virtual std::vector<uint64_t> AllGather(uint64_t value) = 0;
  virtual void Barrier() = 0;
  // Ends every process of the job with this exit status (MPI_Abort); for one process, exits.
  [[noreturn]] virtual void Abort(int status) = 0;
};

// This process alone, or (distributed) every rank of the MPI job it was launched in. Throws
// bptt::Error when distributed in a build without MPI (-DBPTT_MPI=OFF).
std::unique_ptr<Communicator> OpenCommunicator(bool distributed);

// Whether this build can train distributed (it was built with MPI).
bool HaveMpi();

// Threads for each rank when none are asked for: the machine's cores shared between its ranks,
// and no more than the cores this process may run on (mpirun binds each rank to a core by
// default); at least 1.
int DefaultThreads(const Communicator& comm);

// An error that every rank of the job throws alike, having agreed on it through a collective
// (a check of all ranks, or rank 0's failure passed to the others): the ranks end in order,
// each with the same one-line message, and nobody has to abort the job.
class AgreedError : public Error {
 public:
  using Error::Error;
};

// Runs `on_root` on rank 0 and gives every rank what it returns; when it throws, every rank
// throws an AgreedError with rank 0's message. Collective.
std::string OnRootForAll(Communicator& comm, const std::function<std::string()>& on_root);

// FNV-1a (64 bits) of the bytes of `values`, continuing from `hash`.
uint64_t Fingerprint(std::span<const float> values, uint64_t hash = 0xcbf29ce484222325ull);
uint64_t Fingerprint(std::string_view bytes, uint64_t hash = 0xcbf29ce484222325ull);

// Throws bptt::Error unless every rank's `fingerprint` of `what` equals rank 0's, naming the
// first rank that differs.
void CheckSameOnEveryRank(Communicator& comm, uint64_t fingerprint, const std::string& what);

// Throws an AgreedError on every rank unless every rank holds the same `options` (a JSON object
// by flag or key) as rank 0, naming the first rank that differs and its first differing option.
// Collective; one allgather of a hash when they agree.
void CheckSameOptions(Communicator& comm, const nlohmann::json& options);

// ---------------------------------------------------------------------------------------------
// What the ranks of a training run exchange.

// What the ranks sum at each step besides the gradients: the loss, and whether any rank was
// asked to stop (SIGINT, SIGTERM, TrainHooks::stop) or ran out of --time-budget.
struct StepSums {
  double loss = 0;
  bool stop = false;
  bool out_of_time = false;
  double seconds = 0;  // since the run started (for --lr-anneal by --time-budget)
};

// Sums the ranks' gradients in `grads`, and `sums`, with one allreduce of one flat float buffer
// (`flat`, kept between steps): the gradients in ModelParams::ForEach order, then the loss, the
// two flags and the seconds. Every rank receives the same bits (the reduction is MPI's, the same
// on every rank). Returns the seconds the allreduce took.
double SumOverRanks(Communicator& comm, ModelParams<float>& grads, StepSums& sums, std::vector<float>& flat);

// The carried state of all `batch` streams, on rank 0 (each rank holds the columns of its share;
// the shares in rank order are the whole batch); `local` itself in one process. Collective.
State<float> GatherState(Communicator& comm, const ModelConfig& config, const State<float>& local, int batch);

// FNV-1a of the weights (and the optimizer's buffers), which every rank must agree on.
uint64_t WeightsFingerprint(const ModelParams<float>& params, const OptimizerState<float>* optimizer = nullptr);

}  // namespace bptt
