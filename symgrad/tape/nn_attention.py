"""nn.MultiheadAttention and the Transformer encoder built on it, torch's
computation step by step from recorded ops (so its gradients are the tape's), with
torch's parameters, init and results."""

import copy
import math
import warnings

import numpy as np

from . import nn_init
from .autograd import is_grad_enabled
from .functional import dropout, gelu, linear, relu
from .nn import GELU, Dropout, LayerNorm, Linear, Module, ModuleList, Parameter, ReLU
from .tensor import Tensor


class NonDynamicallyQuantizableLinear(Linear):
    """torch's name for MultiheadAttention's output projection: a Linear."""


class MultiheadAttention(Module):
    """Attention over num_heads heads of embed_dim // num_heads features each: q, k
    and v projected by the rows of in_proj_weight, each head's softmax(q k^T /
    sqrt(head_dim)) v, joined and projected by out_proj. forward returns the output
    and (with need_weights) the attention weights, averaged over the heads unless
    average_attn_weights=False. Keys and values of other sizes (kdim, vdim) get
    their own projections, q_proj_weight, k_proj_weight and v_proj_weight, in
    place of in_proj_weight. add_bias_kv/add_zero_attn are not in symgrad.tape."""

    def __init__(
        self,
        embed_dim,
        num_heads,
        dropout=0.0,
        bias=True,
        add_bias_kv=False,
        add_zero_attn=False,
        kdim=None,
        vdim=None,
        batch_first=False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError(
                "MultiheadAttention(add_bias_kv=, add_zero_attn=) is not in tape"
            )
        if embed_dim % num_heads:
            raise AssertionError("embed_dim must be divisible by num_heads")
        self.embed_dim = embed_dim
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self._qkv_same_embed_dim = self.kdim == self.vdim == embed_dim
        self.num_heads, self.dropout, self.batch_first = num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        separate = ("q_proj_weight", "k_proj_weight", "v_proj_weight")
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(np.empty((3 * embed_dim, embed_dim), dtype))
            for name in separate:
                self.register_parameter(name, None)
        else:
            for name, dim in zip(
                separate, (embed_dim, self.kdim, self.vdim), strict=True
            ):
                setattr(self, name, Parameter(np.empty((embed_dim, dim), dtype)))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(
            embed_dim, embed_dim, bias=bias, dtype=dtype
        )
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        if self._qkv_same_embed_dim:
            nn_init.xavier_uniform_(self.in_proj_weight)
        else:
            for name in separate:
                nn_init.xavier_uniform_(getattr(self, name))
        if bias:
            nn_init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query,
        key,
        value,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        batched = query.ndim == 3
        if not batched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = self._attend(
            query, key, value, key_padding_mask, attn_mask, is_causal
        )
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        if not need_weights:
            return out, None
        weights = weights.mean(1) if average_attn_weights else weights
        return out, weights if batched else weights.squeeze(0)

    def _attend(self, query, key, value, key_padding_mask, attn_mask, is_causal):
        """(L, N, E) query and (S, N, E) key and value: the output (L, N, E) and
        the weights (N, heads, L, S)."""
        (n_queries, batch, e), n_keys = query.shape, key.shape[0]
        heads, d = self.num_heads, self.head_dim
        if self._qkv_same_embed_dim:
            wq, wk, wv = self.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else b.chunk(3)

        def split(x, n):  # (n, N, E) -> (N * heads, n, d)
            return x.reshape(n, batch * heads, d).transpose(0, 1)

        q = split(linear(query, wq, bq), n_queries)
        k = split(linear(key, wk, bk), n_keys)
        v = split(linear(value, wv, bv), n_keys)
        bias = np.zeros((batch, 1, n_queries, n_keys), q.dtype)
        if is_causal and attn_mask is None:
            attn_mask = Tensor._wrap(np.triu(np.ones((n_queries, n_keys), bool), 1))
        if attn_mask is not None:
            mask = attn_mask._data.reshape(-1, n_queries, n_keys)
            bias = bias + (np.where(mask, -np.inf, 0) if mask.dtype == bool else mask)
        if key_padding_mask is not None:
            pad = key_padding_mask._data
            bias = bias + np.where(pad, -np.inf, 0)[:, None, None, :]
        bias = np.broadcast_to(bias, (batch, heads, n_queries, n_keys))
        scores = (q * math.sqrt(1.0 / d)) @ k.transpose(1, 2)
        scores = scores + Tensor._wrap(bias.reshape(batch * heads, n_queries, n_keys))
        weights = dropout(scores.softmax(-1), self.dropout, self.training)
        out = (weights @ v).transpose(0, 1).reshape(n_queries * batch, e)
        out = self.out_proj(out).reshape(n_queries, batch, e)
        return out, weights.reshape(batch, heads, n_queries, n_keys)


def _activation(activation):
    """torch's _get_activation_fn: "relu" or "gelu" by name; a callable as it is."""
    if not isinstance(activation, str):
        return activation
    if activation == "relu":
        return relu
    if activation == "gelu":
        return gelu
    raise RuntimeError(f"activation should be relu/gelu, not {activation}")


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block (linear1, activation, linear2),
    each added to its input with dropout and layer-normalized after (or, with
    norm_first, its input normalized before). torch's fast path for inference
    computes the same."""

    def __init__(
        self,
        d_model,
        nhead,
        dim_feedforward=2048,
        dropout=0.1,
        activation=relu,
        layer_norm_eps=1e-5,
        batch_first=False,
        norm_first=False,
        bias=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.self_attn = MultiheadAttention(
            d_model,
            nhead,
            dropout=dropout,
            bias=bias,
            batch_first=batch_first,
            dtype=dtype,
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        activation = _activation(activation)
        # torch's flag for its fast path, read by TransformerEncoder's warning
        if activation is relu or isinstance(activation, ReLU):
            self.activation_relu_or_gelu = 1
        elif activation is gelu or isinstance(activation, GELU):
            self.activation_relu_or_gelu = 2
        else:
            self.activation_relu_or_gelu = 0
        self.activation = activation

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        x = src
        if self.norm_first:
            x = x + self._sa_block(
                self.norm1(x), src_mask, src_key_padding_mask, is_causal
            )
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal):
        x = self.self_attn(
            x,
            x,
            x,
            attn_mask=attn_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            is_causal=is_causal,
        )[0]
        return self.dropout1(x)

    def _ff_block(self, x):
        x = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return self.dropout2(x)


class TransformerEncoder(Module):
    """num_layers copies of encoder_layer (deep copies, as torch makes them, so
    each has its own parameters, starting from the layer's) applied in turn, then
    `norm` if given. enable_nested_tensor only chooses torch's fast path for
    inference; where that path cannot be taken torch warns, and so does this."""

    def __init__(
        self,
        encoder_layer,
        num_layers,
        norm=None,
        enable_nested_tensor=True,
        mask_check=True,
    ):
        super().__init__()
        self.layers = ModuleList(
            [copy.deepcopy(encoder_layer) for _ in range(num_layers)]
        )
        self.num_layers, self.norm = num_layers, norm
        self.enable_nested_tensor = self.use_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check
        why_not = _why_no_fast_path(encoder_layer)
        if enable_nested_tensor and why_not:
            warnings.warn(
                "enable_nested_tensor is True, but self.use_nested_tensor is False "
                f"because {why_not}",
                stacklevel=2,
            )
            self.use_nested_tensor = False

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        """A given mask is used as it is, so is_causal (torch's hint that the mask
        is the causal one) changes nothing then. Where torch takes its inference
        fast path, which packs the unpadded tokens into a nested tensor and back,
        the padded positions come out 0 (before `norm`), as here."""
        output = src
        for layer in self.layers:
            output = layer(
                output,
                src_mask=mask,
                is_causal=is_causal is True,
                src_key_padding_mask=src_key_padding_mask,
            )
        if self._packs(src, mask, src_key_padding_mask):
            padded = src_key_padding_mask._data != 0
            output = output.masked_fill(Tensor._wrap(padded[..., None]), 0.0)
        return output if self.norm is None else self.norm(output)

    def _packs(self, src, mask, key_padding_mask):
        """Whether torch's forward takes the nested-tensor fast path: allowed at
        construction, in eval mode, for a batch with a key padding mask (whose
        kept tokens lead each row, if mask_check) and no mask, nothing to
        record."""
        if not self.use_nested_tensor or self.layers[0].training or src.ndim != 3:
            return False
        if key_padding_mask is None or mask is not None:
            return False
        kept = key_padding_mask._data == 0
        if self.mask_check and (kept[:, 1:] > kept[:, :-1]).any():
            return False
        tensors = (src, *self.layers[0].parameters())
        return not (is_grad_enabled() and any(t.requires_grad for t in tensors))


def _why_no_fast_path(layer):
    """Why torch's TransformerEncoder cannot take its nested-tensor fast path with
    this layer ("" if it can)."""
    name = "encoder_layer"
    if not isinstance(layer, TransformerEncoderLayer):
        return f"{name} was not TransformerEncoderLayer"
    attn = layer.self_attn
    reasons = [
        (layer.norm_first, f"{name}.norm_first was True"),
        (
            not attn.batch_first,
            f"{name}.self_attn.batch_first was not True(use batch_first for better "
            "inference performance)",
        ),
        (
            not attn._qkv_same_embed_dim,
            f"{name}.self_attn._qkv_same_embed_dim was not True",
        ),
        (attn.in_proj_bias is None, f"{name}.self_attn was passed bias=False"),
        (
            not layer.activation_relu_or_gelu,
            f"{name}.activation_relu_or_gelu was not True",
        ),
        (
            layer.norm1.eps != layer.norm2.eps,
            f"{name}.norm1.eps was not equal to {name}.norm2.eps",
        ),
        (attn.num_heads % 2 == 1, f"{name}.self_attn.num_heads is odd"),
    ]
    return next((why for failed, why in reasons if failed), "")
