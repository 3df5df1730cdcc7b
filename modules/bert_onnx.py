"""Build a sentence-embedding ONNX graph from BERT safetensors weights, with onnx.helper.

The graph is the BERT encoder of Hugging Face ``BertModel`` (absolute positions, one
token type, post-LayerNorm, exact erf GELU) followed by sentence-transformers' mean
pooling over the attention mask and L2 normalization, so one ``session.run`` gives the
final embeddings:

    input_ids [batch, seq] int64, attention_mask [batch, seq] int64  ->  embeddings [batch, hidden]

The build is reproducible: fixed names, fixed order, fixed opset and IR version and no
timestamps, so the same weights always give the same bytes (the cache relies on it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file

CONVERTER_VERSION = "1"
OPSET = 17  # LayerNormalization is a standard op from 17 on; onnxruntime >= 1.14 runs it
IR_VERSION = 8


@dataclass(frozen=True, slots=True)
class BertConfig:
    """The few fields of a Hugging Face BERT config.json the graph needs."""

    hidden: int
    heads: int
    layers: int
    layer_norm_eps: float

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        """Read config.json; ValueError for a non-GELU or non-absolute-position model, KeyError for a missing size."""
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute-position BERT with exact GELU is supported")
        return cls(int(raw["hidden_size"]), int(raw["num_attention_heads"]),
                   int(raw["num_hidden_layers"]), float(raw.get("layer_norm_eps", 1e-12)))


class _Graph:
    """A tiny builder: nodes and initializers with deterministic, readable names."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(self, key: str, transpose: bool = False) -> str:
        value = self.weights[key].astype(np.float32)
        return self.const(key, value.T if transpose else value)

    def op(self, op_type: str, inputs: list[str], **attrs: Any) -> str:
        self._count += 1
        out = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._count}", **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        return self.op("Add", [self.op("MatMul", [x, self.weight(f"{prefix}.weight", True)]),
                               self.weight(f"{prefix}.bias")])

    def layer_norm(self, x: str, prefix: str, eps: float) -> str:
        return self.op("LayerNormalization", [x, self.weight(f"{prefix}.weight"), self.weight(f"{prefix}.bias")],
                       axis=-1, epsilon=eps)


def _attention(g: _Graph, x: str, mask_bias: str, prefix: str, cfg: BertConfig) -> str:
    head_dim = cfg.hidden // cfg.heads
    split = g.const(f"{prefix}.split_shape", np.array([0, 0, cfg.heads, head_dim], dtype=np.int64))
    merge = g.const(f"{prefix}.merge_shape", np.array([0, 0, cfg.hidden], dtype=np.int64))

    def heads(name: str, perm: list[int]) -> str:
        return g.op("Transpose", [g.op("Reshape", [g.linear(x, f"{prefix}.self.{name}"), split])], perm=perm)

    q = heads("query", [0, 2, 1, 3])  # [B, H, S, D]
    k = heads("key", [0, 2, 3, 1])  # [B, H, D, S]
    v = heads("value", [0, 2, 1, 3])
    scale = g.const(f"{prefix}.scale", np.array(1 / math.sqrt(head_dim), dtype=np.float32))
    scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), mask_bias])
    context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    merged = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge])
    return g.layer_norm(g.op("Add", [g.linear(merged, f"{prefix}.output.dense"), x]),
                        f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def _feed_forward(g: _Graph, x: str, prefix: str, cfg: BertConfig) -> str:
    h = g.linear(x, f"{prefix}.intermediate.dense")
    # exact GELU: 0.5 * h * (1 + erf(h / sqrt 2)); onnxruntime fuses this pattern into one Gelu
    inv_sqrt2 = g.const(f"{prefix}.inv_sqrt2", np.array(1 / math.sqrt(2), dtype=np.float32))
    one = g.const(f"{prefix}.one", np.array(1.0, dtype=np.float32))
    half = g.const(f"{prefix}.half", np.array(0.5, dtype=np.float32))
    erf = g.op("Erf", [g.op("Mul", [h, inv_sqrt2])])
    gelu = g.op("Mul", [g.op("Mul", [h, half]), g.op("Add", [erf, one])])
    out = g.linear(gelu, f"{prefix}.output.dense")
    return g.layer_norm(g.op("Add", [out, x]), f"{prefix}.output.LayerNorm", cfg.layer_norm_eps)


def build_model(weights: dict[str, np.ndarray], cfg: BertConfig) -> onnx.ModelProto:
    """The encoder, mean pooling and L2 norm as one unchecked ModelProto; a "bert." key prefix is accepted."""
    # some exports prefix every tensor with "bert."
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    g = _Graph(weights)

    # embeddings: word + position (0..seq-1) + token type 0, then LayerNorm
    # positions 0..seq-1 are the first rows of the table: a Slice, 1-D bounds throughout
    seq_len = g.op("Shape", ["input_ids"], start=1, end=2)
    zero = g.const("zero_1d", np.array([0], dtype=np.int64))
    word = g.op("Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"], axis=0)
    position = g.op("Slice", [g.weight("embeddings.position_embeddings.weight"), zero, seq_len, zero])
    token_type = g.const("embeddings.token_type_0", weights["embeddings.token_type_embeddings.weight"][0])
    x = g.layer_norm(g.op("Add", [g.op("Add", [word, position]), token_type]),
                     "embeddings.LayerNorm", cfg.layer_norm_eps)

    # padding positions get a large negative bias before the softmax: [B, 1, 1, S]
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    mask4 = g.op("Unsqueeze", [mask, g.const("mask_axes", np.array([1, 2], dtype=np.int64))])
    one = g.const("one_f32", np.array(1.0, dtype=np.float32))
    mask_bias = g.op("Mul", [g.op("Sub", [one, mask4]), g.const("neg_big", np.array(-1e9, dtype=np.float32))])

    for i in range(cfg.layers):
        prefix = f"encoder.layer.{i}"
        x = _attention(g, x, mask_bias, f"{prefix}.attention", cfg)
        x = _feed_forward(g, x, prefix, cfg)

    # mean pooling over real tokens, then L2 normalization (sentence-transformers' Pooling + Normalize)
    mask3 = g.op("Unsqueeze", [mask, g.const("pool_axis", np.array([2], dtype=np.int64))])
    axis1 = g.const("seq_axis", np.array([1], dtype=np.int64))
    summed = g.op("ReduceSum", [g.op("Mul", [x, mask3]), axis1], keepdims=0)
    counts = g.op("Max", [g.op("ReduceSum", [mask3, axis1], keepdims=0),
                          g.const("min_count", np.array(1e-9, dtype=np.float32))])
    pooled = g.op("Div", [summed, counts])
    # ReduceSum takes its axes as an input since opset 13, ReduceL2 only from 18: an attribute here
    norm = g.op("Max", [g.op("ReduceL2", [pooled], axes=[1], keepdims=1),
                        g.const("min_norm", np.array(1e-12, dtype=np.float32))])
    g.nodes.append(helper.make_node("Div", [pooled, norm], ["embeddings"], name="normalize"))

    graph = helper.make_graph(
        g.nodes,
        "sentence_embedding",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", cfg.hidden])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="democratic-ai", producer_version=CONVERTER_VERSION)
    model.ir_version = IR_VERSION
    return model


def convert(safetensors_path: Path, config_path: Path) -> bytes:
    """The ONNX bytes for the weights at ``safetensors_path``.  Same input, same bytes."""
    weights = load_file(str(safetensors_path))
    model = build_model(weights, BertConfig.from_json(config_path))
    data: bytes = model.SerializeToString(deterministic=True)
    # checked on the bytes: checking the proto would serialize all 90 MB a second time
    onnx.checker.check_model(data)
    return data
