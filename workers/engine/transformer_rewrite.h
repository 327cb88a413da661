// PyTorch's fused transformer ops, rewritten into the aten ops they stand for, so that
// attention's projections and the feed-forward layers are ordinary aten::linear calls on
// their module parameters: layers that graph_layers.h finds, taps and quantizes.
//
//   aten::_native_multi_head_attention   nn.MultiheadAttention's eval fast path
//   aten::_transformer_encoder_layer_fwd nn.TransformerEncoderLayer's eval fast path
//
// Self-attention only (query, key and value one value, as the fast paths need): the packed
// input projection stays one linear on `in_proj_weight` (a layer named `<attn>.in_proj`),
// followed by the same arithmetic the fused kernel does. A call the rewrite cannot express
// (attention weights used, a distinct key or value) is left fused and named by
// FusedTransformerOps.
#ifndef OMPQ_WORKERS_ENGINE_TRANSFORMER_REWRITE_H_
#define OMPQ_WORKERS_ENGINE_TRANSFORMER_REWRITE_H_

#include <torch/csrc/jit/ir/ir.h>

#include <string>
#include <vector>

namespace ompq::engine {

/// Rewrites every fused transformer op of the inlined `graph` it can; returns how many.
/// Throws (a LibTorch error) only on an internal failure to build the replacement.
int UnfuseTransformerOps(torch::jit::Graph& graph);

/// The fused transformer ops still in `graph` (nested blocks included), one text each:
/// "op aten::_native_multi_head_attention at module attn (its attention weights are used)".
std::vector<std::string> FusedTransformerOps(torch::jit::Graph& graph);

/// The graph preparation every instrumented or exported forward gets: Inline, the static
/// ifs folded (graph_layers.h), the fused transformer ops rewritten. Each layer call then
/// appears once, as an aten::conv* or aten::linear.
void PrepareForwardGraph(torch::jit::Graph& graph, const torch::jit::Module& module);

}  // namespace ompq::engine

#endif  // OMPQ_WORKERS_ENGINE_TRANSFORMER_REWRITE_H_
