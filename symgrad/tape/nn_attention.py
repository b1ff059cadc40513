"""nn.MultiheadAttention, torch's computation step by step from recorded ops (so its
gradients are the tape's), with torch's parameters, init and results."""

import math

import numpy as np

from . import nn_init
from .functional import dropout, linear
from .nn import Linear, Module, Parameter
from .tensor import Tensor


class NonDynamicallyQuantizableLinear(Linear):
    """torch's name for MultiheadAttention's output projection: a Linear."""


class MultiheadAttention(Module):
    """Attention over num_heads heads of embed_dim // num_heads features each: q, k
    and v projected by the rows of in_proj_weight, each head's softmax(q k^T /
    sqrt(head_dim)) v, joined and projected by out_proj. forward returns the output
    and (with need_weights) the attention weights, averaged over the heads unless
    average_attn_weights=False. Keys and values of other sizes (kdim, vdim) and
    add_bias_kv/add_zero_attn are not in symgrad.tape."""

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
        if kdim not in (None, embed_dim) or vdim not in (None, embed_dim):
            raise NotImplementedError("MultiheadAttention(kdim=, vdim=) is not in tape")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError(
                "MultiheadAttention(add_bias_kv=, add_zero_attn=) is not in tape"
            )
        if embed_dim % num_heads:
            raise AssertionError("embed_dim must be divisible by num_heads")
        self.embed_dim, self.kdim, self.vdim = embed_dim, embed_dim, embed_dim
        self._qkv_same_embed_dim = True
        self.num_heads, self.dropout, self.batch_first = num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = Parameter(np.empty((3 * embed_dim, embed_dim), dtype))
        for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            self.register_parameter(name, None)
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(
            embed_dim, embed_dim, bias=bias, dtype=dtype
        )
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        nn_init.xavier_uniform_(self.in_proj_weight)
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
        w, b = self.in_proj_weight, self.in_proj_bias
        wq, wk, wv = w.chunk(3)
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
