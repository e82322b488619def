"""Build an ONNX graph of a BERT sentence encoder straight from safetensors weights.

Our own builder (no torch, no transformers): word + position (+ token type 0)
embeddings, LayerNorm, N post-LN self-attention layers with an erf GELU feed-forward,
then mean pooling over the attention mask. Build-time folds keep the graph small: the
token-type-0 row is added to the position table, Q/K/V are one MatMul, and the
1/sqrt(head_dim) scale is folded into the query weights.

Inputs: ``input_ids`` and ``attention_mask`` (int64, [batch, seq]).
Output: ``pooled`` (float32, [batch, hidden]), not normalised.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

from llmroute.encoders.export import BUILDER_VERSION  # bump it there when this output changes

__all__ = ["BertConfig", "build_bert_graph"]

_OPSET = 17  # LayerNormalization is a standard op from 17
_F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class BertConfig:
    hidden: int
    heads: int
    layers: int
    eps: float

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            hidden=int(raw["hidden_size"]),
            heads=int(raw["num_attention_heads"]),
            layers=int(raw["num_hidden_layers"]),
            eps=float(raw.get("layer_norm_eps", 1e-12)),
        )


class _Builder:
    """Accumulates nodes and initialisers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, name: str, value: npt.ArrayLike, dtype: type = np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, w: _F32, b: _F32, name: str) -> str:
        """x @ w.T + b for a torch-layout (out, in) weight."""
        y = self.op("MatMul", [x, self.const(f"{name}.w", np.ascontiguousarray(w.T))])
        return self.op("Add", [y, self.const(f"{name}.b", b)])

    def layer_norm(self, x: str, w: _F32, b: _F32, name: str, eps: float) -> str:
        scale, bias = self.const(f"{name}.g", w), self.const(f"{name}.b", b)
        return self.op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)


def _embeddings(g: _Builder, t: dict[str, _F32], cfg: BertConfig) -> str:
    p = "embeddings."
    words = g.op("Gather", [g.const("word_emb", t[p + "word_embeddings.weight"]), "input_ids"])
    pos_table = t[p + "position_embeddings.weight"] + t[p + "token_type_embeddings.weight"][0]
    seq_len = g.op("Gather", [g.op("Shape", ["input_ids"]), g.const("one", 1, np.int64)])
    positions = g.op("Range", [g.const("zero", 0, np.int64), seq_len, "one"])
    pos = g.op("Gather", [g.const("pos_emb", pos_table), positions])
    summed = g.op("Add", [words, pos])
    return g.layer_norm(
        summed, t[p + "LayerNorm.weight"], t[p + "LayerNorm.bias"], "emb_ln", cfg.eps
    )


def _attention(g: _Builder, x: str, bias: str, t: dict[str, _F32], i: int, cfg: BertConfig) -> str:
    p = f"encoder.layer.{i}.attention."
    head_dim = cfg.hidden // cfg.heads
    scale = 1.0 / math.sqrt(head_dim)
    w = np.concatenate(
        [t[p + "self.query.weight"] * scale, t[p + "self.key.weight"], t[p + "self.value.weight"]]
    )
    b = np.concatenate(
        [t[p + "self.query.bias"] * scale, t[p + "self.key.bias"], t[p + "self.value.bias"]]
    )
    qkv = g.linear(x, w, b, f"l{i}.qkv")
    split = g.const(f"l{i}.split", [cfg.hidden] * 3, np.int64)
    g._n += 1
    q, k, v = (f"l{i}.q", f"l{i}.k", f"l{i}.v")
    g.nodes.append(helper.make_node("Split", [qkv, split], [q, k, v], axis=-1))
    heads_shape = g.const(f"l{i}.hshape", [0, 0, cfg.heads, head_dim], np.int64)
    qh = g.op("Transpose", [g.op("Reshape", [q, heads_shape])], perm=[0, 2, 1, 3])
    kh = g.op("Transpose", [g.op("Reshape", [k, heads_shape])], perm=[0, 2, 3, 1])
    vh = g.op("Transpose", [g.op("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])
    scores = g.op("Add", [g.op("MatMul", [qh, kh]), bias])
    probs = g.op("Softmax", [scores], axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, vh])], perm=[0, 2, 1, 3])
    merged = g.op("Reshape", [ctx, g.const(f"l{i}.mshape", [0, 0, cfg.hidden], np.int64)])
    out = g.linear(merged, t[p + "output.dense.weight"], t[p + "output.dense.bias"], f"l{i}.o")
    ln_w, ln_b = t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"]
    return g.layer_norm(g.op("Add", [out, x]), ln_w, ln_b, f"l{i}.ln1", cfg.eps)


def _feed_forward(g: _Builder, x: str, t: dict[str, _F32], i: int, cfg: BertConfig) -> str:
    p = f"encoder.layer.{i}."
    h = g.linear(
        x, t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"], f"l{i}.up"
    )
    erf = g.op("Erf", [g.op("Mul", [h, g.const(f"l{i}.rsqrt2", 1.0 / math.sqrt(2.0))])])
    half = g.op("Mul", [h, g.const(f"l{i}.half", 0.5)])
    gelu = g.op("Mul", [half, g.op("Add", [erf, g.const(f"l{i}.onef", 1.0)])])
    out = g.linear(gelu, t[p + "output.dense.weight"], t[p + "output.dense.bias"], f"l{i}.down")
    ln_w, ln_b = t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"]
    return g.layer_norm(g.op("Add", [out, x]), ln_w, ln_b, f"l{i}.ln2", cfg.eps)


def _mean_pool(g: _Builder, hidden: str, mask_f: str) -> str:
    mask3 = g.op("Unsqueeze", [mask_f, g.const("axis_last", [-1], np.int64)])
    summed = g.op("ReduceSum", [g.op("Mul", [hidden, mask3]), "one_axis"], keepdims=0)
    count = g.op("ReduceSum", [mask3, "one_axis"], keepdims=0)
    count = g.op("Max", [count, g.const("tiny", 1e-9)])
    return g.op("Div", [summed, count])


def build_bert_graph(model_dir: Path) -> onnx.ModelProto:
    """The float32 graph for the BERT checkpoint in `model_dir` (safetensors + config)."""
    cfg = BertConfig.from_json(model_dir / "config.json")
    raw = load_file(str(model_dir / "model.safetensors"))
    t = {k: v.astype(np.float32) for k, v in raw.items() if v.dtype.kind == "f"}
    g = _Builder()
    g.const("one_axis", [1], np.int64)
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    # additive mask [batch, 1, 1, seq]: 0 where attended, -1e4 on padding
    mask4 = g.op("Unsqueeze", [mask_f, g.const("axes_12", [1, 2], np.int64)])
    bias = g.op("Mul", [g.op("Sub", [g.const("onem", 1.0), mask4]), g.const("neg", -10000.0)])
    x = _embeddings(g, t, cfg)
    for i in range(cfg.layers):
        x = _feed_forward(g, _attention(g, x, bias, t, i, cfg), t, i, cfg)
    pooled = _mean_pool(g, x, mask_f)
    g.nodes.append(helper.make_node("Identity", [pooled], ["pooled"], name="pooled"))
    ints = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask")
    ]
    out = helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", cfg.hidden])
    graph = helper.make_graph(g.nodes, "bert_mean_pool", ints, [out], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8
    model.producer_name = f"llmroute-bert-builder-{BUILDER_VERSION}"
    onnx.checker.check_model(model, full_check=False)
    return model
