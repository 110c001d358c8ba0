// The Python module's side of sequences.h: bptt.fit, bptt.SequenceModel and the scikit-learn
// style estimators bptt.SequenceClassifier and bptt.SequenceRegressor (sequences.cc).
#pragma once

#include <pybind11/pybind11.h>

namespace bptt::python {

// Adds fit, SequenceModel, SequenceClassifier and SequenceRegressor to the module.
void RegisterSequences(pybind11::module_& m);

}  // namespace bptt::python
