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
// notices and kills the others, naming the rank (docs/distributed.md).
//
//   std::unique_ptr<Communicator> comm = OpenCommunicator(options.distributed);
//   comm->Sum(flat_gradients);   // on every rank: the sums over the ranks, bit for bit alike
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace bptt {

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;        // N
  virtual int local_size() const = 0;  // the ranks on this machine (sharing its cores)
  virtual std::string Describe() const = 0;  // "4 ranks on 2 machines (Open MPI v4.1.4)"

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

// FNV-1a (64 bits) of the bytes of `values`, continuing from `hash`.
uint64_t Fingerprint(std::span<const float> values, uint64_t hash = 0xcbf29ce484222325ull);

// Throws bptt::Error unless every rank's `fingerprint` of `what` equals rank 0's, naming the
// first rank that differs.
void CheckSameOnEveryRank(Communicator& comm, uint64_t fingerprint, const std::string& what);

}  // namespace bptt
