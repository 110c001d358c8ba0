// Training curves: the metrics.jsonl of one or more runs (trainer.h) drawn as one SVG figure, so
// that a run can be watched in a browser and runs compared side by side.
//
// Four panels, one colour per run (its directory's name in the legend): the training loss (solid)
// and the validation loss (dashed) against steps, the same against wall time, the learning rate
// against steps, and the fraction of steps whose gradient was clipped. The loss is in the units
// of the run's head: nats per symbol for a language model (the axis says so, with bits per
// symbol = nats / ln 2 beside it), the task's loss otherwise.
//
//   WriteCurves({"models/a", "models/b"}, "models/a/curves.svg");
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace bptt {

// Throws bptt::Error naming the run whose metrics.jsonl is missing, unreadable or malformed. A
// partial last line (a run still being written) is skipped, with a message naming the file and
// the line appended to `skipped` when it is given.
std::string RenderCurves(const std::vector<std::filesystem::path>& runs, std::vector<std::string>* skipped = nullptr);
void WriteCurves(const std::vector<std::filesystem::path>& runs, const std::filesystem::path& out,
                 std::vector<std::string>* skipped = nullptr);

}  // namespace bptt
