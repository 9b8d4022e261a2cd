// The op set the forward pass is written against.
//
// Why: one forward pass (model.cc), several implementations of its ops. The
// CPU backend (fp32, OpenBLAS) is the reference; the CUDA backend implements
// the same ops with kernels and is tested op by op against the CPU one. Ops
// are at the granularity of the kernels we want on a GPU (fused where a GPU
// would fuse), so the interface does not force extra memory passes.
//
// Conventions: every float* is backend memory (device memory on a GPU);
// activations are row-major [n, C]; a Matrix is applied as y = x @ W^T with
// W stored [rows = out, cols = in]. Segment arrays and pointer arrays are
// host memory. A batch is a list of segments: consecutive rows of one
// session (slot), advanced in order; different segments are independent.
// State slots are `slot_stride` floats apart; `state` points at the current
// layer's block inside slot 0 (see state_layout.h).
// Not thread-safe: one thread drives a backend.
#ifndef RWKV_ENGINE_MODEL_BACKEND_H_
#define RWKV_ENGINE_MODEL_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/loader/dtype.h"
#include "engine/sampler/sample_spec.h"

namespace rwkv {

struct Segment {
  int32_t slot = 0;       // state slot of the session; -1: padding (below)
  int32_t row_begin = 0;  // first row of the segment in the batch
  int32_t rows = 0;       // tokens of this session in the batch (>= 1; >= 0 for padding)
};
// Padding: where a backend asks for it (Backend::PassRowQuantum), a pass is
// rounded up to a few sizes with segments of slot -1: one covering the extra
// rows (token 0) and empty ones (rows 0) after the real ones. Every op skips
// their state (there is none) and computes whatever it likes in their rows,
// which nothing reads: the logit rows, the states and the real rows are
// exactly what they would be unpadded.

struct Matrix {
  const void* data = nullptr;  // backend memory, row-major [rows, cols] (see input_major)
  int32_t rows = 0;            // outputs
  int32_t cols = 0;            // inputs
  DType dtype = DType::kF32;
  // Stored transposed, [cols, rows], so that one input's weights are one
  // contiguous run (UploadSparseInputMatrix). Only the backend that made the
  // matrix reads this; every op still applies it as y = x @ W^T.
  bool input_major = false;
};

// One product of a GroupedMatMul: y (= or +=) act(x) @ W^T, x [n, w->cols],
// y [n, w->rows].
enum class InputAct : uint8_t { kNone, kTanh, kSigmoid };
struct MatMulJob {
  const float* x = nullptr;
  const Matrix* w = nullptr;
  float* y = nullptr;
  bool accumulate = false;
  // Applied to x as it is read. A backend may instead apply it to x in
  // place (the default does), so x must be scratch that no other job of
  // the call reads.
  InputAct act = InputAct::kNone;
  // x's element type: kF32, or the 16-bit type Backend::MatMulInputType
  // returned for this n, when LayerNormShiftMix, V7Output (Wkv7WithOutput)
  // or SigmoidGate wrote x in it (then act
  // must be kNone and x holds [n, w->cols] elements of that type).
  DType x_type = DType::kF32;
  // y's element type: kF32, or the 16-bit type FfnHiddenType or
  // LoraHiddenType returned for this n (then accumulate must be false,
  // x_type that type too, and y receives [n, w->rows] elements of it, the
  // fp32 sums rounded to nearest even, to be read only by ReluSquareMatMul
  // with that h_type or by GroupedMatMul jobs with that x_type).
  DType y_type = DType::kF32;
  // Applied to each fp32 sum before its rounding to a 16-bit y_type (tanhf,
  // or 1 / (1 + expf(-v))): the RWKV-7 LoRA "in" products hand their "out"
  // products act(x @ W^T) already rounded, the values a job with this act
  // would have rounded from an fp32 y. kNone with an fp32 y_type.
  InputAct y_act = InputAct::kNone;
};

// Where a layer's state lives: state + slot * slot_stride + offset.
struct StateRef {
  float* base = nullptr;     // the current layer's block within slot 0
  int64_t slot_stride = 0;   // floats between consecutive slots
  // Element type of the block at base. Only Wkv7 takes kF16 (base then holds
  // the fp16 matrices, still addressed in 4-byte units; see SlotLayout in
  // state_layout.h); every other op's state is kF32.
  DType dtype = DType::kF32;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;

  // ---- memory ----
  // Allocations are freed by Free or when the backend is destroyed.
  virtual absl::StatusOr<float*> Alloc(size_t floats) = 0;
  virtual void Free(float* p) = 0;
  virtual absl::Status Upload(const float* host, float* dst, size_t floats) = 0;
  virtual absl::Status Download(const float* src, float* host, size_t floats) = 0;
  virtual absl::Status CopyFloats(const float* src, float* dst, size_t floats) = 0;
  // Takes a host fp32 matrix [rows, cols] used by MatMul; the backend chooses
  // how to store it (dtype, packing).
  virtual absl::StatusOr<Matrix> UploadMatrix(const float* host, int32_t rows, int32_t cols) = 0;
  // Takes the host fp32 embedding table [vocab, C], used only by Embedding.
  virtual absl::StatusOr<Matrix> UploadEmbedding(const float* host, int32_t rows, int32_t cols) = 0;
  // Blocks until queued work is done and reports any asynchronous fault.
  virtual absl::Status Sync() = 0;
  // Free and total bytes of the memory Alloc draws from, where the backend
  // has a fixed pool of its own (a GPU); UNIMPLEMENTED where it allocates
  // from host memory. Sizes the state pool at start-up.
  struct MemoryInfo {
    size_t free_bytes = 0, total_bytes = 0;
  };
  virtual absl::StatusOr<MemoryInfo> DeviceMemory() {
    return absl::UnimplementedError("this backend allocates host memory");
  }

  // ---- host memory that Upload and Download copy to and from fastest ----
  // Why: the engine offloads idle sessions' states to host memory and brings
  // them back. On a GPU, page-locked memory makes those copies DMA transfers
  // at full bus speed, where pageable memory is staged by the driver through
  // a pinned bounce buffer. Page-locked memory is slow to allocate and
  // freeing it may wait for the device, so callers allocate blocks once and
  // reuse them. The default (a backend whose Alloc is host memory) is
  // ordinary 64-byte aligned memory.
  // `bytes` (> 0) of host memory, 64-byte aligned; RESOURCE_EXHAUSTED (with
  // the bytes asked) when there is none. Every block must be given back with
  // FreeHost before the backend is destroyed.
  virtual absl::StatusOr<void*> AllocHost(size_t bytes);
  // Gives back a block from AllocHost (nullptr: no-op).
  virtual void FreeHost(void* p);
  // Whether AllocHost's memory is page-locked for the device's copies.
  virtual bool HostMemoryPinned() const { return false; }

  // ---- forward passes (optional) ----
  // A pass is the ops of one Model::Forward pass, from its Embedding to its
  // head MatMul. BeginPass names the pass's host arrays up front: the
  // segments, the token ids and the row ids of the logit rows (any may be
  // null with a count of 0). They stay unchanged and alive until EndPass, and
  // the ops of the pass receive these same pointers, so a backend may copy
  // them to its memory once per pass instead of once per op (and may replay
  // a recorded pass). No Download, Upload, Alloc or Free happens between the
  // two calls. The defaults do nothing.
  virtual void BeginPass(const Segment* /*segs*/, int /*nseg*/, const int32_t* /*tokens*/, int /*rows*/,
                         const int32_t* /*logit_rows*/, int /*nlogit*/) {}
  virtual void EndPass() {}
  // The granule a pass's row, segment and logit-row counts are rounded up to
  // (with padding segments, see Segment), for a count of `count`; 1 = no
  // padding (the default). Why: a backend that records a pass per shape (CUDA
  // graphs) then sees a few shapes instead of one per mix of decoding and
  // prompt rows, and replays instead of recording at every new mix.
  virtual int PassRowQuantum(int /*count*/) const { return 1; }
  // Bytes the backend allocates by itself for Wkv7 in passes of up to `rows`
  // rows (C channels, head size N, state in state_dtype), at most: counted by
  // Model::WorkspaceBytes, so a server sizing its state pool from the free
  // memory leaves room for them. Default: none.
  virtual int64_t Wkv7ScratchBytes(int /*rows*/, int /*C*/, int /*N*/, DType /*state_dtype*/) const { return 0; }
  // Whether the backend records a pass per shape (CUDA graphs) and so gains
  // from seeing the shapes a server will run before it serves
  // (Model::WarmUpPasses). Default: no.
  virtual bool RecordsPasses() const { return false; }

  // ---- ops ----
  // x[i] = row tokens[i] of emb (tokens: host array of n ids, already validated).
  virtual void Embedding(const Matrix& emb, const int32_t* tokens, int n, float* x) = 0;
  // y = LayerNorm(x) * w + b per row, eps 1e-5 (y may equal x).
  virtual void LayerNorm(const float* x, int n, int C, const float* w, const float* b, float* y) = 0;
  // y (= or +=) x @ W^T; x [n, W.cols], y [n, W.rows].
  virtual void MatMul(const float* x, int n, const Matrix& w, float* y, bool accumulate) = 0;
  // out[i] = x[rows[i]] (rows: host array).
  virtual void GatherRows(const float* x, const int32_t* rows, int n, int C, float* out) = 0;
  // Token shift: d[r] = prev(r) - xx[r], where prev is the previous row of the
  // same segment or, for a segment's first row, x_prev from the state; then the
  // segment's last xx row is stored as the state's x_prev. `x_prev` is the
  // layer's x_prev vector within slot 0.
  virtual void TokenShift(const float* xx, const Segment* segs, int nseg, int C, StateRef x_prev,
                          float* d) = 0;
  // outs[j] = xx + d * mixes[j] (mixes: [C] vectors), j < count.
  virtual void Mix(const float* xx, const float* d, int n, int C, const float* const* mixes,
                   float* const* outs, int count) = 0;

  // ---- elementwise (n = element count) ----
  virtual void Sigmoid(float* x, int64_t n) = 0;
  virtual void Tanh(float* x, int64_t n) = 0;
  virtual void ReluSquare(float* x, int64_t n) = 0;
  // x *= a
  virtual void Mul(float* x, const float* a, int64_t n) = 0;
  // x += a * b
  virtual void MulAdd(float* x, const float* a, const float* b, int64_t n) = 0;
  // x = sigmoid(x + bias[col]) for x [n, C]
  virtual void SigmoidBias(float* x, const float* bias, int n, int C) = 0;
  // The RWKV-4 gates as single ops (the CUDA backend: one launch each, the
  // same bits as the compositions). r is scratch: the default compositions
  // overwrite it with sigmoid(r).
  // out = sigmoid(r) * y: out is y (kF32), or, with out_type what
  // MatMulInputType returned, n elements of that type in a buffer of its own
  // (it feeds a product). Default: Sigmoid(r), Mul(y, r); kF32 into y only.
  virtual void SigmoidGate(float* y, float* r, int64_t n, float* out, DType out_type);
  // x += sigmoid(r) * t. Default: Sigmoid(r), MulAdd(x, r, t).
  virtual void SigmoidMulAdd(float* x, float* r, const float* t, int64_t n);

  // ---- RWKV-7 ----
  // w = exp(-exp(-0.5) * sigmoid(w0 + w)) in place, w [n, C].
  virtual void V7Decay(float* w, const float* w0, int n, int C) = 0;
  // kk = L2-normalise-per-head(k * k_k) (eps 1e-12); then k = k * (1 + (a - 1) * k_a).
  virtual void V7KeyPrep(float* k, float* kk, const float* a, const float* k_k, const float* k_a, int n,
                         int C, int N) = 0;
  // v += (v_first - v) * sigmoid(v0 + gate); gate [n, C].
  virtual void V7ValueResidual(float* v, const float* v_first, const float* gate, const float* v0, int n,
                               int C) = 0;
  // The state recurrence over each segment's rows, per head:
  //   S = S diag(w) - (S kk)(kk a)^T + v k^T;  y = S r.
  // `wkv` is the layer's [H][N][N] block within slot 0. With wkv.dtype kF16
  // the matrices are fp16: each token's update is computed in fp32 from the
  // stored fp16 values and rounded back to fp16 after every token (so a
  // prompt's result does not depend on how it is split into segments), by
  // the stochastic rounding of fp16_state_rounding.h; y uses the unrounded
  // update.
  virtual void Wkv7(const Segment* segs, int nseg, int C, int N, StateRef wkv, const float* r,
                    const float* w, const float* k, const float* v, const float* kk, const float* a,
                    float* y) = 0;
  // out = (GroupNorm_H(y) * lnw + lnb + sum_head(r * k * r_k) * v) * g, eps 64e-5.
  // out_type kF32: out is [n, C] floats and may be y (in place). Otherwise
  // what MatMulInputType(n) returned: out holds [n, C] elements of that type
  // (rounded to nearest even), to be read only by a GroupedMatMul job with
  // that x_type, and must not overlap y.
  virtual void V7Output(float* y, const float* r, const float* k, const float* v, const float* g,
                        const float* r_k, const float* lnw, const float* lnb, int n, int C, int N, float* out,
                        DType out_type) = 0;
  // Wkv7 then V7Output over the pass's n rows, as one op: a backend may
  // apply the output stage inside the WKV step (the CUDA backend does for
  // decode passes, one launch fewer per layer) and then leaves y unwritten
  // (y is scratch). Default: the two ops.
  virtual void Wkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv, const float* r,
                              const float* w, const float* k, const float* v, const float* kk, const float* a,
                              float* y, const float* g, const float* r_k, const float* lnw, const float* lnb,
                              float* out, DType out_type);

  // ---- RWKV-4 ----
  // The WKV recurrence with the running-max form; `aa` points at the layer's
  // aa vector in slot 0 (bb at +C, pp at +2C). time_decay is -exp(raw).
  virtual void Wkv4(const Segment* segs, int nseg, int C, StateRef aa, const float* time_first,
                    const float* time_decay, const float* k, const float* v, float* y) = 0;

  // ---- fused ops (small-batch decode) ----
  // Each is one launch on a GPU where the ops above would be several. The
  // defaults compose the ops above, in the order the unfused forward pass
  // ran them, so the CPU backend (which keeps them) computes exactly what it
  // computed before, and a backend that forwards ops keeps working.

  // As UploadMatrix, for a matrix whose inputs are mostly zero (the FFN
  // down-projection after relu²): the backend may store it input-major so
  // that a product can skip the rows of zero inputs. Default: UploadMatrix.
  virtual absl::StatusOr<Matrix> UploadSparseInputMatrix(const float* host, int32_t rows, int32_t cols);
  // The jobs' products, in any order: no job's y may be another job's x.
  // Default: each job's activation (in place) and MatMul, in order.
  virtual void GroupedMatMul(int n, const MatMulJob* jobs, int count);
  // The RWKV-7 projections of a layer: the `main` products (r, k, v) and the
  // LoRA chain, `lora_in` then `lora_out` (whose inputs are lora_in's
  // outputs). A backend may run the chain beside the main products: no job
  // of either may read what a job of the other writes, nor write what it
  // reads or writes. At most kMaxV7ProjectionJobs jobs a list. Default:
  // GroupedMatMul of main and lora_in as one group (in that order), then
  // GroupedMatMul of lora_out.
  static constexpr int kMaxV7ProjectionJobs = 8;
  virtual void V7Projections(int n, const MatMulJob* main, int n_main, const MatMulJob* lora_in, int n_in,
                             const MatMulJob* lora_out, int n_out);
  // y (= or +=) relu(h)² @ W^T, h [n, W.cols] (the FFN's key projection),
  // y [n, W.rows]. h is scratch: it may be left holding relu(h)².
  // h_type: kF32, or what FfnHiddenType(n) returned (h then holds [n, W.cols]
  // elements of that type, as a GroupedMatMul job with that y_type wrote
  // them; relu² is computed in fp32 from each and rounded back).
  // Default: ReluSquare(h) and MatMul (kF32 only).
  virtual void ReluSquareMatMul(float* h, int n, const Matrix& w, float* y, bool accumulate, DType h_type);
  // LayerNorm, token shift and mixes of one sub-block: with xx = LayerNorm(x)
  // and d = TokenShift(xx) (as the ops above define them, x_prev updated),
  // outs[j] = xx + d * mixes[j]. xx and d ([n, C] each) are scratch a
  // backend may use. Default: LayerNorm, TokenShift, Mix.
  // out_type: the outputs' element type, kF32 or what MatMulInputType(n)
  // returned (then the outputs are [n, C] elements of that type, rounded to
  // nearest even, to be read only by GroupedMatMul jobs with that x_type).
  virtual void LayerNormShiftMix(const float* x, int n, int C, const float* ln_w, const float* ln_b,
                                 const Segment* segs, int nseg, StateRef x_prev, const float* const* mixes,
                                 float* const* outs, int count, float* xx, float* d, DType out_type);
  // The element type LayerNormShiftMix may write for a pass of n rows whose
  // outputs only products read: kF32 (the default), or the 16-bit type a
  // backend's products of n rows take as they are, which saves a conversion
  // pass over every such input (issue 4/5: 7% of a 7.2B prefill pass).
  // A backend that returns a 16-bit type must override GroupedMatMul,
  // LayerNormShiftMix and V7Output too (the RWKV-7 output stage writes the
  // o-projection's input in it): the default compositions and the CPU
  // backend take fp32 only and abort on anything else (a programming error,
  // never a request's).
  virtual DType MatMulInputType(int /*n*/) const { return DType::kF32; }
  // The element type in which the FFN's key projection may write its output
  // (the hidden [n, F]) for a pass of n rows: kF32 (the default) or the
  // 16-bit MatMulInputType(n), which halves the largest activation's
  // traffic (written by the product, read and written by relu², read by
  // the down-projection). A backend that returns a 16-bit type must take it
  // in GroupedMatMul (MatMulJob::y_type) and ReluSquareMatMul.
  virtual DType FfnHiddenType(int /*n*/) const { return DType::kF32; }
  // The element type in which the RWKV-7 LoRA "in" products (x @ W1^T) may
  // hand their outputs, activated (MatMulJob::y_act), to the "out" products
  // for a pass of n rows: kF32 (the default: the "out" jobs apply the
  // activation as they read, MatMulJob::act) or the 16-bit
  // MatMulInputType(n), where the backend's "in" products write what its
  // "out" products read, with no conversion between (the CUDA backend's LoRA
  // kernel, kernels/lora_gemm.cu). A backend that returns a 16-bit type must
  // take y_type and y_act in GroupedMatMul.
  virtual DType LoraHiddenType(int /*n*/) const { return DType::kF32; }
  // The RWKV-7 per-channel stage between the projections and the WKV, all
  // [n, C] in place:
  //   w = exp(-exp(-0.5) * sigmoid(w0 + w))             (V7Decay)
  //   a = sigmoid(a + a0)                               (SigmoidBias)
  //   kk = normalise(k * k_k), k = k * (1 + (a-1)*k_a)  (V7KeyPrep, with the new a)
  //   v += (v_first - v) * sigmoid(v0 + v_gate)         (V7ValueResidual) if v0,
  //   else (layer 0) v_first = v.
  // Default: those ops in that order.
  virtual void V7Prep(float* w, const float* w0, float* a, const float* a0, float* k, float* kk,
                      const float* k_k, const float* k_a, float* v, float* v_first, const float* v_gate,
                      const float* v0, int n, int C, int N);
  // V7Prep's arguments, for V7PrepWkv7WithOutput.
  struct V7PrepArgs {
    float* w;
    const float* w0;
    float* a;
    const float* a0;
    float* k;
    float* kk;
    const float* k_k;
    const float* k_a;
    float* v;
    float* v_first;
    const float* v_gate;  // null with v0
    const float* v0;      // null: layer 0
  };
  // V7Prep then Wkv7WithOutput on what it wrote (w, k, v, kk, a), as one op:
  // a backend may apply the prep inside the WKV step (the CUDA backend does
  // where it applies the output stage there, one launch fewer per layer, the
  // same bits). Afterwards p.w, p.a, p.k, p.kk, p.v and y (unless it is out)
  // hold unspecified values (scratch); p.v_first is V7Prep's on the rows of
  // the segments (padding segments' rows: unspecified). out must not overlap
  // p.v_gate. Default: the two ops.
  virtual void V7PrepWkv7WithOutput(const Segment* segs, int nseg, int n, int C, int N, StateRef wkv,
                                    const V7PrepArgs& p, const float* r, float* y, const float* g, const float* r_k,
                                    const float* lnw, const float* lnb, float* out, DType out_type);

  // ---- RWKV-7 LoRA products on padded copies (optional) ----
  // Why: where every LoRA product goes to a library GEMM, each of the four
  // shapes (w, a, v, g) is a call of its own, latency bound at a few tiles.
  // Padded to the largest LoRA width (zero weights: exact zeros), the four
  // "in" products are one shape, and so are the four "out" ones, so a
  // backend that groups products of one shape runs each side as one call.
  // Whether the model should upload the padded copies.
  virtual bool PadsLora() const { return false; }
  // Whether a pass of n rows should use them (only where PadsLora()).
  virtual bool PaddedLoraPays(int /*n*/) const { return false; }

  // ---- sampling where the logits are (optional) ----
  // Why: at large batches the [B, vocab] fp32 logits cost more to copy to the
  // host than the step that made them; a backend that can pick the tokens
  // itself returns B (token, logprob) pairs instead.
  // Whether SampleRows is implemented.
  virtual bool SupportsDeviceSampling() const { return false; }
  // For each i < n: picks a token from row rows[i] of `logits` (backend
  // memory, rows of `vocab` floats, not modified) as specs[i] describes
  // (Sampler::Sample's semantics, see engine/sampler/sample_spec.h) into
  // out[i]. rows, specs and out are host arrays; out is filled on return.
  // Not between BeginPass and EndPass.
  virtual absl::Status SampleRows(const float* /*logits*/, int /*vocab*/, const int32_t* /*rows*/,
                                  const SampleSpec* /*specs*/, int /*n*/, SampledToken* /*out*/) {
    return absl::UnimplementedError("this backend does not sample on its own memory");
  }
};

}  // namespace rwkv

#endif  // RWKV_ENGINE_MODEL_BACKEND_H_
