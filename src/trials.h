// Trials (trainer.h TrainTrials): one task or corpus trained with seeds S, S + 1, ... into
// DIR/seed-S, and what they give over the seeds in DIR/summary.json. DIR/trials.json keeps the
// trial count and the options, so that a trials directory resumes as one run.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>

#include "bptt/trainer.h"

namespace bptt {

// Mean, standard deviation (n - 1), minimum and maximum over `runs` (their summaries) of each
// number the first one reports, but its seed.
nlohmann::json TrialStatistics(const nlohmann::json& runs);

// Resume of a directory with trials.json (trainer.h Resume).
TrainResult ResumeTrials(const std::filesystem::path& dir, const nlohmann::json& given, std::ostream& log, bool live,
                         const TrainHooks& hooks);

}  // namespace bptt
