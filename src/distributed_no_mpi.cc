// A build without MPI (-DBPTT_MPI=OFF, or no MPI found): training runs in one process.
#include "bptt/error.h"
#include "distributed.h"

namespace bptt {

bool HaveMpi() { return false; }

std::unique_ptr<Communicator> OpenMpiCommunicator() {
  throw Error(
      "this bptt was built without MPI, so it cannot train distributed (install libopenmpi-dev and build with "
      "-DBPTT_MPI=ON)");
}

}  // namespace bptt
