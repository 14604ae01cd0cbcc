#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace wcodec::cuda {

struct DeviceInfo {
  std::string name;
  int compute_capability;  // e.g. 90 for sm_90
  size_t total_memory;
};

struct DeviceReport {
  std::vector<DeviceInfo> devices;
  int runtime_version = 0;
  std::string error;  // why no device is usable, when devices is empty
};

DeviceReport query_devices();

}  // namespace wcodec::cuda
