// nanobind glue for the CUDA module: device discovery and the batch decoder. Device memory is
// passed as integer pointers (CuPy's data.ptr); streams as cudaStream_t handles.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "../cuda/device_query.h"
#include "wcodec/codec.h"
#include "wcodec/cuda_decode.h"
#include "objects.h"

using namespace nb::literals;

using OutBuf = nb::ndarray<uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using U64 = nb::ndarray<uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

namespace {

// Raises wcodec_zarr.codec.errors.<type_name>(message, index, reason).
[[noreturn]] void raise_indexed(const char* type_name, const std::string& message, size_t index,
                                const std::string& reason) {
  nb::object type = nb::module_::import_("wcodec_zarr.codec.errors").attr(type_name);
  nb::object exc = type(message, index, reason);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc.ptr())), exc.ptr());
  throw nb::python_error();
}

// Raises wcodec_zarr.codec.errors.ChunkError, the exception of the CPU path too.
[[noreturn]] void raise_chunk_error(const wcodec::ChunkError& e) {
  raise_indexed("ChunkError", e.what(), e.index, e.reason);
}

void check(cudaError_t err) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(err));
}

// The CUDA runtime linked into this module keeps its own current device per thread, apart from
// CuPy's: every call that enqueues work first makes current the device the caller's memory and
// stream belong to.
void use_device(int device_id) { check(cudaSetDevice(device_id)); }

// A batch staged in one host buffer (wcodec_zarr.codec.staging), copied as a whole to `device`:
// chunk k lies at offsets[k] in both, and decodes into outs[k] (out_lens[k] bytes).
wcodec::cuda::DecodePlan plan_staged(InBuf host, uintptr_t device, ConstU64 offsets, ConstU64 lens,
                                     ConstU64 outs, ConstU64 out_lens) {
  const size_t n = offsets.size();
  if (lens.size() != n || outs.size() != n || out_lens.size() != n) {
    throw std::invalid_argument("plan_staged: one entry per chunk in every array");
  }
  std::vector<wcodec::cuda::ChunkRef> refs(n);
  for (size_t k = 0; k < n; ++k) {
    if (offsets(k) > host.size() || lens(k) > host.size() - offsets(k)) {
      throw std::invalid_argument("plan_staged: chunk " + std::to_string(k) + " lies outside the buffer");
    }
    refs[k] = {host.data() + offsets(k), static_cast<size_t>(lens(k)),
               reinterpret_cast<const uint8_t*>(device + offsets(k)), reinterpret_cast<uint8_t*>(outs(k)),
               static_cast<size_t>(out_lens(k))};
  }
  try {
    nb::gil_scoped_release release;
    return wcodec::cuda::plan_decode(refs.data(), refs.size());
  } catch (const wcodec::ChunkError& e) {
    raise_chunk_error(e);
  }
}

// Chunks in device memory (chunk k: lens[k] bytes at devices[k]) planned from their heads, which
// the caller copied to the host: chunk k's first head_lens[k] bytes at head_offsets[k] of `heads`
// (at least core.head's bound). Chunk k decodes into outs[k] (out_lens[k] bytes).
wcodec::cuda::DecodePlan plan_heads(InBuf heads, ConstU64 head_offsets, ConstU64 head_lens, ConstU64 lens,
                                    ConstU64 devices, ConstU64 outs, ConstU64 out_lens) {
  const size_t n = lens.size();
  if (head_offsets.size() != n || head_lens.size() != n || devices.size() != n || outs.size() != n ||
      out_lens.size() != n) {
    throw std::invalid_argument("plan_heads: one entry per chunk in every array");
  }
  std::vector<wcodec::cuda::ChunkRef> refs(n);
  for (size_t k = 0; k < n; ++k) {
    if (head_offsets(k) > heads.size() || head_lens(k) > heads.size() - head_offsets(k) || head_lens(k) > lens(k)) {
      throw std::invalid_argument("plan_heads: chunk " + std::to_string(k) + "'s head lies outside the buffer");
    }
    refs[k] = {heads.data() + head_offsets(k),
               static_cast<size_t>(lens(k)),
               reinterpret_cast<const uint8_t*>(devices(k)),
               reinterpret_cast<uint8_t*>(outs(k)),
               static_cast<size_t>(out_lens(k)),
               static_cast<size_t>(head_lens(k))};
  }
  try {
    nb::gil_scoped_release release;
    return wcodec::cuda::plan_decode(refs.data(), refs.size());
  } catch (const wcodec::ChunkError& e) {
    raise_chunk_error(e);
  }
}

// Stored objects (file paths or buffers) staged into `staging` (pinned) and uploaded to
// `device_staging` (on device `device_id`), their chunks planned to decode into outs[i]
// (out_lens[i] bytes); see wcodec::cuda::stage_and_plan. A bad object raises
// wcodec_zarr.codec.errors.StageError with its index, a bad chunk ChunkError with the chunk's.
wcodec::cuda::DecodePlan stage_and_plan(const nb::list& sources, ConstU64 sizes, ConstU64 slots, ConstU64 slot_lens,
                                        ConstU32 per_shard, ConstU32 nchunks, ConstU64 first, OutBuf staging,
                                        uint32_t align, uintptr_t device_staging, ConstU64 outs,
                                        ConstU64 out_lens, U64 chunk_offset, U64 chunk_len, int device_id,
                                        uintptr_t stream, int threads) {
  const size_t n = outs.size();
  if (slots.size() != sources.size() || slot_lens.size() != sources.size() || out_lens.size() != n ||
      chunk_offset.size() != n || chunk_len.size() != n) {
    throw std::invalid_argument("stage_and_plan: one entry per object, and per chunk, in every array");
  }
  std::vector<std::string> paths;
  std::vector<wcodec::StageObject> objects =
      batch_objects("stage_and_plan", sources, sizes, per_shard, nchunks, first, n, &paths);
  std::vector<wcodec::cuda::StagedOutput> dests(n);
  for (size_t k = 0; k < objects.size(); ++k) {
    objects[k].slot = slots(k);
    objects[k].slot_len = slot_lens(k);
  }
  for (size_t i = 0; i < n; ++i) dests[i] = {reinterpret_cast<uint8_t*>(outs(i)), static_cast<size_t>(out_lens(i))};
  try {
    nb::gil_scoped_release release;
    use_device(device_id);
    return wcodec::cuda::stage_and_plan(objects.data(), objects.size(), staging.data(), staging.size(), align,
                                        reinterpret_cast<uint8_t*>(device_staging), dests.data(), n, chunk_offset.data(),
                                        chunk_len.data(), reinterpret_cast<cudaStream_t>(stream), threads);
  } catch (const wcodec::ChunkError& e) {
    raise_chunk_error(e);
  } catch (const wcodec::StageError& e) {
    raise_indexed("StageError", "object " + std::to_string(e.index) + ": " + e.what(), e.index, e.what());
  }
}

}  // namespace

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
  nb::class_<wcodec::cuda::DecodePlan>(m, "DecodePlan")
      .def_prop_ro("workspace_bytes", &wcodec::cuda::DecodePlan::workspace_bytes)
      .def_prop_ro("descriptor_bytes", &wcodec::cuda::DecodePlan::descriptor_bytes)
      // the descriptor image as a read-only uint8 array that borrows the plan's memory
      .def_prop_ro(
          "descriptors",
          [](nb::handle self) {
            const auto& p = nb::cast<const wcodec::cuda::DecodePlan&>(self);
            const size_t shape[1] = {p.descriptor_bytes()};
            return nb::ndarray<nb::numpy, const uint8_t, nb::ndim<1>>(
                static_cast<const uint8_t*>(p.descriptors()), 1, shape, self);
          },
          nb::rv_policy::reference_internal)
      .def_prop_ro("num_chunks", &wcodec::cuda::DecodePlan::num_chunks)
      .def_prop_ro("num_segments", &wcodec::cuda::DecodePlan::num_segments);
  m.def("plan_staged", &plan_staged, "host"_a, "device"_a, "offsets"_a, "lens"_a, "outs"_a, "out_lens"_a);
  m.def("plan_heads", &plan_heads, "heads"_a, "head_offsets"_a, "head_lens"_a, "lens"_a, "devices"_a, "outs"_a,
        "out_lens"_a);
  m.def("stage_and_plan", &stage_and_plan, "sources"_a, "sizes"_a, "slots"_a, "slot_lens"_a, "per_shard"_a,
        "nchunks"_a, "first"_a, "staging"_a, "align"_a, "device_staging"_a, "outs"_a, "out_lens"_a,
        "chunk_offset"_a, "chunk_len"_a, "device_id"_a, "stream"_a, "threads"_a);
  m.def(
      "enqueue",
      [](const wcodec::cuda::DecodePlan& p, uintptr_t workspace, size_t workspace_bytes, uintptr_t status,
         bool verify, int device_id, uintptr_t stream) {
        nb::gil_scoped_release release;
        use_device(device_id);
        check(wcodec::cuda::enqueue_decode(p, reinterpret_cast<void*>(workspace), workspace_bytes,
                                           reinterpret_cast<int32_t*>(status), verify,
                                           reinterpret_cast<cudaStream_t>(stream)));
      },
      "plan"_a, "workspace"_a, "workspace_bytes"_a, "status"_a, "verify"_a, "device_id"_a, "stream"_a);
  nb::class_<wcodec::cuda::DecodeGraph>(m, "DecodeGraph")
      .def(
          "__init__",
          [](wcodec::cuda::DecodeGraph* self, const wcodec::cuda::DecodePlan& p, uintptr_t workspace,
             size_t workspace_bytes, uintptr_t status, bool verify, int device_id) {
            nb::gil_scoped_release release;
            use_device(device_id);
            new (self) wcodec::cuda::DecodeGraph(p, reinterpret_cast<void*>(workspace), workspace_bytes,
                                                 reinterpret_cast<int32_t*>(status), verify);
          },
          "plan"_a, "workspace"_a, "workspace_bytes"_a, "status"_a, "verify"_a, "device_id"_a)
      .def(
          "launch",
          [](const wcodec::cuda::DecodeGraph& g, int device_id, uintptr_t stream) {
            nb::gil_scoped_release release;
            use_device(device_id);
            check(g.launch(reinterpret_cast<cudaStream_t>(stream)));
          },
          "device_id"_a, "stream"_a);
  m.def("status_message", &wcodec::cuda::status_message);
}
