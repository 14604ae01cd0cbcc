// GPU batch decoder (CUDA): the same bitstream as the CPU decoder, one warp per segment.
//
// Flow: plan_decode() parses and validates every chunk's container on the host (headers,
// tables, index: everything but the rANS payloads) and lays out a descriptor block. The caller
// copies descriptors() (descriptor_bytes() bytes) to the start of its workspace, however it
// likes (from pinned memory, the copy is asynchronous), then enqueue_decode() launches the
// kernels on the caller's stream; a plan's workspace can be launched again and again. Nothing is
// allocated and nothing synchronises: the caller provides
//   - the chunk bytes in device memory (each chunk at least 16-byte aligned),
//   - one output buffer per chunk in device memory (at least 16-byte aligned),
//   - a workspace of workspace_bytes() bytes (device memory, 256-byte aligned),
//   - a status array of one int32 per chunk (device memory),
// and waits on the stream before reading outputs or statuses. Every output byte is written
// (zeros for a segment rejected before decoding); status[i] is 0 or a DecodeStatus code.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "wcodec/staging.h"

namespace wcodec::cuda {

enum DecodeStatus : int32_t {
  kOk = 0,
  kBadInitialState = 1,   // a lane state below 2^16
  kTruncatedSegment = 2,  // renormalisation words ran out
  kUnreadWords = 3,       // words left over at the end of a segment
  kFinalStateMismatch = 4,
  kChecksumMismatch = 5,
  kBadPadding = 6,  // nonzero padding before a segment or plane (checked here for heads-only plans)
};
const char* status_message(int32_t status);

struct ChunkRef {
  const uint8_t* host;    // the chunk bytes in host memory (parsed for the plan)
  size_t len;
  const uint8_t* device;  // the same bytes in device memory
  uint8_t* out_dev;       // output, out_len bytes, in device memory
  size_t out_len;         // must equal the chunk's decoded size
  // how many of the chunk's bytes are at `host`: all of them, or its head only (at least
  // chunk_head_bound's count, wcodec/codec.h) when the payload is in device memory alone
  size_t host_len = SIZE_MAX;
};

class DecodePlan {
 public:
  DecodePlan();
  ~DecodePlan();
  DecodePlan(DecodePlan&&) noexcept;
  DecodePlan& operator=(DecodePlan&&) noexcept;
  size_t workspace_bytes() const;
  size_t descriptor_bytes() const;       // a prefix of the workspace
  const void* descriptors() const;       // host image of that prefix
  size_t num_chunks() const;
  size_t num_segments() const;

  struct Impl;
  std::unique_ptr<Impl> impl;
};

// Throws wcodec::ChunkError (from wcodec/codec.h) for a malformed container or a wrong out_len.
DecodePlan plan_decode(const ChunkRef* chunks, size_t count);

// Where a staged chunk decodes to (device memory, `len` bytes, 16-byte aligned).
struct StagedOutput {
  uint8_t* dev;
  size_t len;
};

// The whole-tensor fast path: reads and plans a batch of stored objects (wcodec/staging.h) in
// one pass over them. Objects are staged into `staging` (pinned host memory, their slots in
// increasing order) on every core; each chunk's container is parsed by the thread that reads
// its last piece, while it is in cache. Then the buffer is copied to the same offsets of
// `device_staging` (staging_len bytes) on `stream`, and the plan is laid out while the copy runs.
// Chunk i (numbered by the objects' `first`, each chunk in exactly one object) decodes into
// outs[i]; chunk_offset[i] and chunk_len[i] receive where it lies in both buffers (`align`, a
// multiple of 16, aligned). Throws StageError (an object's index) or ChunkError (a chunk's
// index); after the copy is enqueued, it waits for it before it throws, so the caller may free
// the staging buffer at once. The copy is enqueued, not awaited: the staging buffer must stay
// untouched until the stream has passed it.
DecodePlan stage_and_plan(const StageObject* objects, size_t count, uint8_t* staging, uint64_t staging_len,
                          uint32_t align, uint8_t* device_staging, const StagedOutput* outs, size_t nchunks,
                          uint64_t* chunk_offset, uint64_t* chunk_len, cudaStream_t stream, int threads);

// Enqueues the batch on `stream`, the descriptors being in the workspace already.
// verify_checksum: compare each chunk's CRC32C on the device.
cudaError_t enqueue_decode(const DecodePlan& plan, void* workspace_dev, size_t workspace_bytes,
                           int32_t* status_dev, bool verify_checksum, cudaStream_t stream);

// What enqueue_decode enqueues for one plan, workspace and status array, recorded once as a CUDA
// graph: each launch() is one submission on the caller's stream instead of several kernel
// launches, whose host-side work the GPU would otherwise wait out between them. For a batch
// decoded again and again (the same inputs and outputs). The graph holds copies of the launch
// parameters: the plan need not outlive it; the workspace, status array and buffers must.
class DecodeGraph {
 public:
  // Records on a private stream of the current device; throws std::runtime_error on a CUDA error.
  DecodeGraph(const DecodePlan& plan, void* workspace_dev, size_t workspace_bytes, int32_t* status_dev,
              bool verify_checksum);
  ~DecodeGraph();
  DecodeGraph(const DecodeGraph&) = delete;
  DecodeGraph& operator=(const DecodeGraph&) = delete;
  cudaError_t launch(cudaStream_t stream) const;

 private:
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace wcodec::cuda
