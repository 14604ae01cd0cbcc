// nanobind glue for the CUDA module.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>

#include "../cuda/device_query.h"

namespace nb = nanobind;

NB_MODULE(_cuda, m) {
  m.doc() = "wcodec CUDA module";
  m.def("query_devices", [] {
    const wcodec::cuda::DeviceReport r = wcodec::cuda::query_devices();
    nb::list devices;
    for (const auto& d : r.devices) {
      nb::dict e;
      e["name"] = d.name;
      e["compute_capability"] = d.compute_capability;
      e["total_memory"] = d.total_memory;
      devices.append(e);
    }
    nb::dict out;
    out["devices"] = devices;
    out["runtime_version"] = r.runtime_version;
    out["error"] = r.error;
    return out;
  });
}
