// nanobind glue for the CPU codec: buffers in, buffers out, the GIL released around native work.
// Argument checking beyond buffer shapes lives in wcodec_zarr/codec/chunks.py.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cerrno>
#include <cmath>
#include <system_error>

#include "../src/segment_decode.h"
#include "wcodec/codec.h"
#include "wcodec/shard.h"
#include "wcodec/staging.h"
#include "objects.h"

namespace nb = nanobind;
using namespace nb::literals;

using OutBuf = nb::ndarray<uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using U64 = nb::ndarray<uint64_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

namespace {

nb::bytes encode(InBuf data, uint8_t dtype, const std::vector<uint64_t>& shape, int threads,
                 bool checksum, bool predict, uint32_t seg_kib, std::optional<U64> histograms) {
  wcodec::EncodeOptions opt;
  if (histograms) {
    wcodec::DTypeLayout layout;
    if (!wcodec::dtype_layout(dtype, &layout)) throw std::invalid_argument("unknown dtype code");
    if (histograms->size() != layout.itemsize * 256u) {
      throw std::invalid_argument("histograms must hold itemsize * 256 counts");
    }
    opt.histograms = histograms->data();
  }
  opt.threads = threads;
  opt.checksum = checksum;
  opt.predict = predict;
  opt.seg_kib = seg_kib;
  wcodec::EncodedChunk chunk;
  {
    nb::gil_scoped_release release;
    chunk = wcodec::encode_chunk(data.data(), dtype, shape.data(), static_cast<uint32_t>(shape.size()), opt);
  }
  PyObject* obj = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(chunk.size()));
  if (!obj) throw nb::python_error();
  nb::bytes out = nb::steal<nb::bytes>(obj);
  uint8_t* dst = reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(obj));
  {
    nb::gil_scoped_release release;
    chunk.write(dst);
  }
  return out;
}

// A shard object's description (wcodec/shard.h) from the binding arguments, checked: `order`
// holds the grid coordinates of the inner chunks in writing order, ndim per chunk.
struct ShardCall {
  wcodec::ShardSpec spec;
  wcodec::EncodeOptions options;

  ShardCall(InBuf data, uint8_t dtype, const std::vector<uint64_t>& shape, const std::vector<uint64_t>& inner,
            const std::vector<uint64_t>& grid, ConstU32 order, InBuf fill, int threads, bool checksum, bool predict,
            uint32_t seg_kib, std::optional<U64>& histograms) {
    wcodec::DTypeLayout layout;
    if (!wcodec::dtype_layout(dtype, &layout)) throw std::invalid_argument("unknown dtype code");
    const size_t nd = shape.size();
    if (inner.size() != nd || grid.size() != nd || nd == 0 || order.size() % nd != 0) {
      throw std::invalid_argument("encode_shard: shape, inner, grid and order disagree on dimensions");
    }
    uint64_t nelem = 1;
    for (uint64_t n : shape) nelem *= n;
    if (data.size() != nelem * layout.itemsize || fill.size() != layout.itemsize) {
      throw std::invalid_argument("encode_shard: data or fill has the wrong size");
    }
    if (histograms && histograms->size() != layout.itemsize * 256u) {
      throw std::invalid_argument("histograms must hold itemsize * 256 counts");
    }
    spec.data = data.data();
    spec.dtype = dtype;
    spec.ndim = static_cast<uint32_t>(nd);
    spec.shape = shape.data();
    spec.inner = inner.data();
    spec.grid = grid.data();
    spec.order = order.data();
    spec.norder = order.size() / nd;
    spec.fill = fill.data();
    options.threads = threads;
    options.checksum = checksum;
    options.predict = predict;
    options.seg_kib = seg_kib;
    options.histograms = histograms ? histograms->data() : nullptr;
  }
};

// One Zarr shard object as its parts, each encoded chunk a bytes object made as soon as its
// group is encoded, then the index. Returns the parts and the fill elements encoded.
nb::tuple encode_shard(InBuf data, uint8_t dtype, const std::vector<uint64_t>& shape,
                       const std::vector<uint64_t>& inner, const std::vector<uint64_t>& grid, ConstU32 order,
                       InBuf fill, int threads, bool checksum, bool predict, uint32_t seg_kib,
                       std::optional<U64> histograms) {
  const ShardCall call(data, dtype, shape, inner, grid, order, fill, threads, checksum, predict, seg_kib, histograms);
  nb::list parts;
  uint64_t padding = 0;
  std::vector<uint8_t> index;
  {
    nb::gil_scoped_release release;
    index = wcodec::encode_shard(
        call.spec, call.options,
        [&](const wcodec::EncodedChunk& chunk) {
          PyObject* obj;
          {
            nb::gil_scoped_acquire acquire;
            obj = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(chunk.size()));
            if (!obj) throw nb::python_error();
          }
          // the new object is not shared yet: it is filled without the GIL
          chunk.write(reinterpret_cast<uint8_t*>(PyBytes_AS_STRING(obj)));
          nb::gil_scoped_acquire acquire;
          parts.append(nb::steal(obj));
        },
        &padding);
  }
  parts.append(nb::bytes(reinterpret_cast<const char*>(index.data()), index.size()));
  return nb::make_tuple(parts, padding);
}

// The same object written to the open file descriptor `fd` (wcodec::write_shard), without the
// GIL and without Python objects. Returns the bytes written and the fill elements encoded.
nb::tuple write_shard(int fd, InBuf data, uint8_t dtype, const std::vector<uint64_t>& shape,
                      const std::vector<uint64_t>& inner, const std::vector<uint64_t>& grid, ConstU32 order,
                      InBuf fill, int threads, bool checksum, bool predict, uint32_t seg_kib,
                      std::optional<U64> histograms) {
  const ShardCall call(data, dtype, shape, inner, grid, order, fill, threads, checksum, predict, seg_kib, histograms);
  uint64_t padding = 0, written = 0;
  {
    nb::gil_scoped_release release;
    written = wcodec::write_shard(fd, call.spec, call.options, &padding);
  }
  return nb::make_tuple(written, padding);
}

// dtype code and shape, after validating the whole container: a caller allocates the output from
// these, so nothing is allocated for input that is malformed.
nb::tuple header(InBuf data) {
  const wcodec::ChunkInfo info = wcodec::parse_chunk(data.data(), data.size());
  nb::list shape;
  for (uint32_t d = 0; d < info.ndim; ++d) shape.append(info.shape[d]);
  return nb::make_tuple(info.dtype, nb::tuple(shape));
}

// The dtype code and shape of an n-byte chunk whose first bytes are `data` (at least
// min(n, kMaxFixedHead) of them), and how many first bytes hold its head (chunk_head_bound).
nb::tuple head(InBuf data, uint64_t n) {
  if (data.size() > n) throw std::invalid_argument("head: more bytes than the chunk has");
  if (data.size() < std::min<uint64_t>(n, wcodec::kMaxFixedHead)) {
    throw std::invalid_argument("head: the chunk's fixed header is not all there");
  }
  const uint64_t bound = wcodec::chunk_head_bound(data.data(), data.size(), n);
  const wcodec::ChunkInfo info = wcodec::parse_header(data.data(), data.size());
  nb::list shape;
  for (uint32_t d = 0; d < info.ndim; ++d) shape.append(info.shape[d]);
  return nb::make_tuple(info.dtype, nb::tuple(shape), bound);
}

// The buffers of a batch's objects, held through the buffer protocol for as long as it lives:
// a batch of thousands of small chunks would spend more in converting each to an ndarray
// (DLPack) than in decoding it.
class HeldBuffers {
 public:
  HeldBuffers(const nb::list& objects, bool writable) {
    views_.reserve(objects.size());
    const int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    for (nb::handle object : objects) {
      Py_buffer view;
      if (PyObject_GetBuffer(object.ptr(), &view, flags) != 0) {
        release();  // a constructor that throws runs no destructor
        throw nb::python_error();
      }
      views_.push_back(view);
    }
  }
  ~HeldBuffers() { release(); }
  HeldBuffers(const HeldBuffers&) = delete;
  HeldBuffers& operator=(const HeldBuffers&) = delete;
  uint8_t* data(size_t k) const { return static_cast<uint8_t*>(views_[k].buf); }
  size_t size(size_t k) const { return static_cast<size_t>(views_[k].len); }

 private:
  void release() {
    for (Py_buffer& view : views_) PyBuffer_Release(&view);
    views_.clear();
  }
  std::vector<Py_buffer> views_;
};

void decode_batch(const nb::list& srcs, const nb::list& dsts, int threads) {
  if (srcs.size() != dsts.size()) throw std::invalid_argument("need one output buffer per chunk");
  const HeldBuffers in(srcs, false), out(dsts, true);
  std::vector<wcodec::DecodeJob> jobs(srcs.size());
  for (size_t k = 0; k < jobs.size(); ++k) jobs[k] = {in.data(k), in.size(k), out.data(k), out.size(k)};
  nb::gil_scoped_release release;
  wcodec::decode_chunks(jobs.data(), jobs.size(), threads);
}

// Runs a staging call without the GIL; an object's StageError becomes a ChunkError with its index.
template <class Call>
void run_staging(Call call) {
  nb::gil_scoped_release release;
  try {
    call();
  } catch (const wcodec::StageError& e) {
    throw wcodec::ChunkError(e.index, "object " + std::to_string(e.index) + ": ", e.what());
  }
}

void stage_objects(const nb::list& sources, ConstU64 sizes, ConstU64 slots, ConstU64 slot_lens,
                   ConstU32 per_shard, ConstU32 nchunks, ConstU64 first, OutBuf staging, uint32_t align,
                   U64 chunk_offset, U64 chunk_len, int threads) {
  if (slots.size() != sources.size() || slot_lens.size() != sources.size() ||
      chunk_offset.size() != chunk_len.size()) {
    throw std::invalid_argument("stage_objects: one entry per object in every array");
  }
  std::vector<std::string> paths;
  std::vector<wcodec::StageObject> objects =
      batch_objects("stage_objects", sources, sizes, per_shard, nchunks, first, chunk_offset.size(), &paths);
  for (size_t k = 0; k < objects.size(); ++k) {
    objects[k].slot = slots(k);
    objects[k].slot_len = slot_lens(k);
  }
  run_staging([&] {
    wcodec::stage_objects(objects.data(), objects.size(), staging.data(), staging.size(), align,
                          chunk_offset.data(), chunk_len.data(), threads);
  });
}

void locate_chunks(const nb::list& sources, ConstU64 sizes, ConstU32 per_shard, ConstU32 nchunks, ConstU64 first,
                   U64 chunk_src, U64 chunk_len, int threads) {
  if (chunk_src.size() != chunk_len.size()) {
    throw std::invalid_argument("locate_chunks: one entry per chunk in both outputs");
  }
  std::vector<std::string> paths;
  const std::vector<wcodec::StageObject> objects =
      batch_objects("locate_chunks", sources, sizes, per_shard, nchunks, first, chunk_src.size(), &paths);
  run_staging([&] {
    wcodec::locate_chunks(objects.data(), objects.size(), chunk_src.data(), chunk_len.data(), threads);
  });
}

// Chunks stored in `sources` (chunk k: bytes [src, src + len) of object chunk_object[k]),
// decoded into dsts[dst_index[k]] at dst_offsets[k] without a staging buffer.
void decode_stored(const nb::list& sources, ConstU64 sizes, ConstU32 chunk_object, ConstU64 chunk_src,
                   ConstU64 chunk_len, const std::vector<OutBuf>& dsts, ConstU32 dst_index, ConstU64 dst_offsets,
                   ConstU64 dst_lens, int threads) {
  const size_t n = chunk_object.size();
  if (chunk_src.size() != n || chunk_len.size() != n || dst_index.size() != n || dst_offsets.size() != n ||
      dst_lens.size() != n) {
    throw std::invalid_argument("decode_stored: one entry per chunk in every array");
  }
  std::vector<std::string> paths;
  const std::vector<wcodec::StageObject> objects = stage_sources(sources, sizes, &paths);
  std::vector<wcodec::StoredChunk> chunks(n);
  for (size_t k = 0; k < n; ++k) {
    if (dst_index(k) >= dsts.size()) throw std::invalid_argument("decode_stored: no such output");
    const OutBuf& dst = dsts[dst_index(k)];
    if (dst_offsets(k) > dst.size() || dst_lens(k) > dst.size() - dst_offsets(k)) {
      throw std::invalid_argument("decode_stored: chunk " + std::to_string(k) + " lies outside its output");
    }
    chunks[k] = {chunk_object(k), chunk_src(k), chunk_len(k), dst.data() + dst_offsets(k), dst_lens(k)};
  }
  nb::gil_scoped_release release;
  wcodec::decode_stored(objects.data(), objects.size(), chunks.data(), n, threads);
}

// Chunks lying in `src` at offsets/lens, decoded into dsts[dst_index[k]] at dst_offsets[k] (one
// native call; segments of all chunks share the threads).
void decode_into(InBuf src, ConstU64 offsets, ConstU64 lens, const std::vector<OutBuf>& dsts,
                 ConstU32 dst_index, ConstU64 dst_offsets, ConstU64 dst_lens, int threads) {
  const size_t n = offsets.size();
  if (lens.size() != n || dst_index.size() != n || dst_offsets.size() != n || dst_lens.size() != n) {
    throw std::invalid_argument("decode_into: one entry per chunk in every array");
  }
  std::vector<wcodec::DecodeJob> jobs(n);
  for (size_t k = 0; k < n; ++k) {
    if (offsets(k) > src.size() || lens(k) > src.size() - offsets(k)) {
      throw std::invalid_argument("decode_into: chunk " + std::to_string(k) + " lies outside the source");
    }
    if (dst_index(k) >= dsts.size()) throw std::invalid_argument("decode_into: no such output");
    const OutBuf& dst = dsts[dst_index(k)];
    if (dst_offsets(k) > dst.size() || dst_lens(k) > dst.size() - dst_offsets(k)) {
      throw std::invalid_argument("decode_into: chunk " + std::to_string(k) + " lies outside its output");
    }
    jobs[k] = {src.data() + offsets(k), static_cast<size_t>(lens(k)), dst.data() + dst_offsets(k),
               static_cast<size_t>(dst_lens(k))};
  }
  nb::gil_scoped_release release;
  wcodec::decode_chunks(jobs.data(), jobs.size(), threads);
}

nb::dict inspect(InBuf data) {
  const wcodec::ChunkInfo info = wcodec::parse_chunk(data.data(), data.size());
  nb::dict d;
  d["dtype_code"] = info.dtype;
  nb::list shape;
  for (uint32_t k = 0; k < info.ndim; ++k) shape.append(info.shape[k]);
  d["shape"] = nb::tuple(shape);
  d["nbytes"] = info.nbytes;
  d["checksum"] = info.has_checksum ? nb::cast(info.checksum) : nb::none();
  d["segment_elements"] = info.seg_elems;
  d["segments"] = info.nseg;
  d["header_bytes"] = info.data_offset;
  nb::list planes;
  static const char* kModes[] = {"raw", "constant", "rans"};
  for (uint32_t p = 0; p < info.nplanes; ++p) {
    const wcodec::PlaneInfo& pl = info.planes[p];
    const wcodec::SegmentCounts c = wcodec::count_segments(data.data(), info, p);
    nb::dict pd;
    pd["mode"] = kModes[static_cast<int>(pl.mode)];
    pd["payload_bytes"] = pl.payload_bytes;
    pd["descriptor_bytes"] = pl.descriptor_bytes;
    pd["index_bytes"] = pl.mode == wcodec::PlaneMode::Rans ? 8 * info.nseg : 0;
    pd["rans_segments"] = c.rans;
    pd["raw_segments"] = c.raw;
    pd["delta_segments"] = c.delta;
    planes.append(pd);
  }
  d["planes"] = planes;
  return d;
}

// Per-plane order-0 entropy (bits per element) of decoded chunk bytes.
std::vector<double> plane_entropy(InBuf decoded, uint8_t dtype) {
  wcodec::DTypeLayout layout;
  if (!wcodec::dtype_layout(dtype, &layout)) throw std::invalid_argument("unknown dtype code");
  const uint64_t nelem = decoded.size() / layout.itemsize;
  uint64_t hist[4][256];
  {
    nb::gil_scoped_release release;
    wcodec::plane_histograms(decoded.data(), nelem, layout, hist);
  }
  std::vector<double> bits(layout.itemsize, 0.0);
  for (uint32_t p = 0; p < layout.itemsize; ++p) {
    for (int s = 0; s < 256; ++s) {
      if (hist[p][s]) bits[p] -= static_cast<double>(hist[p][s]) / nelem * std::log2(static_cast<double>(hist[p][s]) / nelem);
    }
  }
  return bits;
}

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "wcodec CPU codec (native core)";
  // wcodec::ChunkError becomes the Python class registered with set_chunk_error_type
  // (wcodec_zarr.codec.errors.ChunkError, a ValueError with .index and .reason).
  static PyObject* chunk_error_type = PyExc_ValueError;
  m.def("set_chunk_error_type", [](nb::handle type) {
    Py_INCREF(type.ptr());
    chunk_error_type = type.ptr();
  });
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const std::system_error& e) {
      // OSError(errno, strerror): the caller names the file
      errno = e.code().value();
      PyErr_SetFromErrno(PyExc_OSError);
    } catch (const wcodec::ChunkError& e) {
      PyObject* exc = PyObject_CallFunction(chunk_error_type, "sns", e.what(),
                                            static_cast<Py_ssize_t>(e.index), e.reason.c_str());
      if (exc != nullptr) {
        PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(exc)), exc);
        Py_DECREF(exc);
      }
    }
  });
  m.def("encode", &encode, "data"_a, "dtype_code"_a, "shape"_a, "threads"_a, "checksum"_a,
        "predict"_a, "segment_kib"_a, "histograms"_a.none() = nb::none());
  m.def("encode_shard", &encode_shard, "data"_a, "dtype_code"_a, "shape"_a, "inner"_a, "grid"_a, "order"_a, "fill"_a,
        "threads"_a, "checksum"_a, "predict"_a, "segment_kib"_a, "histograms"_a.none() = nb::none());
  m.def("write_shard", &write_shard, "fd"_a, "data"_a, "dtype_code"_a, "shape"_a, "inner"_a, "grid"_a, "order"_a,
        "fill"_a, "threads"_a, "checksum"_a, "predict"_a, "segment_kib"_a, "histograms"_a.none() = nb::none());
  m.def("header", &header, "data"_a);
  m.def("head", &head, "data"_a, "n"_a);
  m.def("decode_batch", &decode_batch, "srcs"_a, "dsts"_a, "threads"_a);
  m.def("inspect", &inspect, "data"_a);
  m.def("stage_objects", &stage_objects, "sources"_a, "sizes"_a, "slots"_a, "slot_lens"_a, "per_shard"_a,
        "nchunks"_a, "first"_a, "staging"_a, "align"_a, "chunk_offset"_a, "chunk_len"_a, "threads"_a);
  m.def("locate_chunks", &locate_chunks, "sources"_a, "sizes"_a, "per_shard"_a, "nchunks"_a, "first"_a,
        "chunk_src"_a, "chunk_len"_a, "threads"_a);
  m.def("decode_stored", &decode_stored, "sources"_a, "sizes"_a, "chunk_object"_a, "chunk_src"_a, "chunk_len"_a,
        "dsts"_a, "dst_index"_a, "dst_offsets"_a, "dst_lens"_a, "threads"_a);
  m.def("decode_into", &decode_into, "src"_a, "offsets"_a, "lens"_a, "dsts"_a, "dst_index"_a, "dst_offsets"_a,
        "dst_lens"_a, "threads"_a);
  m.def("plane_entropy", &plane_entropy, "decoded"_a, "dtype_code"_a);
  m.def("simd", &wcodec::segment_decoder_name);
  m.attr("FORMAT_VERSION") = wcodec::kVersion;
}
