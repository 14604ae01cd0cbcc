// Device discovery for the CUDA module: which GPUs the runtime sees, or why it sees none.
#include <cuda_runtime.h>

#include "device_query.h"

namespace wcodec::cuda {

DeviceReport query_devices() {
  DeviceReport report;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    report.error = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
    return report;
  }
  int runtime = 0;
  cudaRuntimeGetVersion(&runtime);
  report.runtime_version = runtime;
  for (int d = 0; d < count; ++d) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) continue;
    report.devices.push_back({prop.name, prop.major * 10 + prop.minor, prop.totalGlobalMem});
  }
  return report;
}

}  // namespace wcodec::cuda
