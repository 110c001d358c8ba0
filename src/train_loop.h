// The training loop (trainer.h): one run from its first or resumed step to its end, on every
// rank of the job. A step is forward, the head's loss, one backward sweep, the ranks' sums,
// clipping, the optimizer's update and the checks that the loss, gradient and weights are
// finite (TrainLoop::Step); between steps come the metrics window, validation, checkpoints and
// the stopping rules. The loop reads its data through TrainData (train_data.h) and writes
// through rank 0's RunDirectory (run_directory.h).
#pragma once

#include <ostream>

#include "bptt/checkpoint.h"
#include "bptt/trainer.h"
#include "distributed.h"
#include "run_directory.h"
#include "train_data.h"

namespace bptt {

// What a run is set up with before its first step (trainer.cc).
struct RunSetup {
  TrainOptions options;  // validated; options.model shaped by the data
  Communicator* comm;
  StreamShare share;     // this rank's streams of options.batch
  TrainData* data;
  RunDirectory* dir;     // rank 0's; nullptr on the others
  int threads;
};

// Trains from the seed (resume == nullptr) or from the checkpoint `resume` to the run's end.
// `log` is rank 0's log (the others discard theirs); `live` redraws a progress line in place.
TrainResult RunTrainingLoop(const RunSetup& setup, const Checkpoint* resume, std::ostream& log, bool live,
                            const TrainHooks& hooks);

// Whether RequestStop asked since ClearStopRequest, which a run calls at its start.
bool StopRequested();
void ClearStopRequest();

}  // namespace bptt
