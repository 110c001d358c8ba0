// Trains an LSTM on the adding problem (Hochreiter & Schmidhuber 1997, Exp. 4: remember two
// marked values over T steps and output their sum) through the bptt library, and prints the
// run's summary: the test set's mean squared error, against the memoryless baseline.
//
//   adding OUT_DIR [MAX_STEPS [T]]      (the defaults: 2000 steps, T = 100)
#include <bptt/error.h>
#include <bptt/task.h>
#include <bptt/trainer.h>

#include <algorithm>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::cerr << "usage: adding OUT_DIR [MAX_STEPS [T]]\n";
    return 2;
  }
  try {
    // The options of `bptt task adding`: TaskDefaults() (a 1 x 64 LSTM, forget-gate bias 5,
    // Adam 1e-3, clipping at 1), the task, the run directory and a limit.
    bptt::TrainOptions options = bptt::TaskDefaults();
    options.task = "adding";
    options.task_length = argc > 3 ? std::stoi(argv[3]) : bptt::Task::Make("adding")->info().default_T;
    options.out = argv[1];
    options.max_steps = argc > 2 ? std::stoll(argv[2]) : 2000;
    options.eval_every = std::min<int64_t>(options.eval_every, options.max_steps);

    const bptt::TrainResult result = bptt::Train(options, std::cerr, /*live=*/false);
    if (result.end == bptt::TrainEnd::kDiverged) {
      std::cerr << "adding: " << result.message << "\n";
      return 1;
    }
    std::cout << result.summary.dump(2) << "\n";
    return 0;
  } catch (const bptt::Error& e) {
    std::cerr << "adding: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {  // std::stoi on a bad number
    std::cerr << "adding: " << e.what() << "\n";
    return 2;
  }
}
