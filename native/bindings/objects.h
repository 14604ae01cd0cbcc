// Binding helpers shared by the CPU and CUDA modules: the buffer types they take and the stored
// objects of a staged batch (wcodec/staging.h) from their Python description.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "wcodec/staging.h"

namespace nb = nanobind;

using InBuf = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using ConstU64 = nb::ndarray<const uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using ConstU32 = nb::ndarray<const uint32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// The objects of `sources` (file paths, or buffers of their bytes, kept referenced by the
// list while the GIL is released); paths holds the path strings.
inline std::vector<wcodec::StageObject> stage_sources(const nb::list& sources, ConstU64 sizes,
                                                      std::vector<std::string>* paths) {
  const size_t n = sources.size();
  if (sizes.size() != n) throw std::invalid_argument("one size per object");
  paths->resize(n);
  std::vector<wcodec::StageObject> objects(n);
  for (size_t k = 0; k < n; ++k) {
    wcodec::StageObject& o = objects[k];
    nb::handle source = sources[k];
    if (nb::isinstance<nb::str>(source)) {
      (*paths)[k] = nb::cast<std::string>(source);
      o.path = (*paths)[k].c_str();
    } else {
      InBuf data = nb::cast<InBuf>(source);
      if (data.size() != sizes(k)) throw std::invalid_argument("object " + std::to_string(k) + ": buffer size differs from sizes");
      o.data = data.data();
    }
    o.size = sizes(k);
  }
  return objects;
}

// The objects of a batch with their chunk layout: object k holds chunks [first[k],
// first[k] + nchunks[k]) of the `nchunk_slots` the caller's output arrays have room for.
inline std::vector<wcodec::StageObject> batch_objects(const char* name, const nb::list& sources, ConstU64 sizes,
                                                      ConstU32 per_shard, ConstU32 nchunks, ConstU64 first,
                                                      size_t nchunk_slots, std::vector<std::string>* paths) {
  const size_t n = sources.size();
  if (per_shard.size() != n || nchunks.size() != n || first.size() != n) {
    throw std::invalid_argument(std::string(name) + ": one entry per object in every array");
  }
  std::vector<wcodec::StageObject> objects = stage_sources(sources, sizes, paths);
  for (size_t k = 0; k < n; ++k) {
    wcodec::StageObject& o = objects[k];
    o.per_shard = per_shard(k);
    o.nchunks = nchunks(k);
    o.first = first(k);
    if (o.first > nchunk_slots || o.nchunks > nchunk_slots - o.first) {
      throw std::invalid_argument(std::string(name) + ": chunk range past the output arrays");
    }
  }
  return objects;
}
