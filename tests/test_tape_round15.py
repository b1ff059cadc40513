"""Tape round 15: a new user's everyday PyTorch scripts, run on torch (float64) and on
symgrad.tape through tests/tape_scripts.py's harness (values, gradients, dtypes,
shapes, Python types, reprs, or the exception type where torch raises).

Covered, and agreeing with torch: torch.utils.data (TensorDataset indexing by int,
slice and tensor, DataLoader len/drop_last/collate_fn/shuffle with a generator as a
permutation, a DataLoader training loop, random_split by fractions with torch's
rounding, its errors and a seeded generator's repeatability); ReduceLROnPlateau
(mode='max' with cooldown and relative threshold, eps, per-group min_lr lists,
invalid arguments), SequentialLR over two and three schedulers, LambdaLR with a list
of lambdas (and the wrong count), PolynomialLR, cosine OneCycleLR's lr/momentum and
its overrun error, CosineAnnealingWarmRestarts stepped with fractional epochs,
scheduler and optimizer state_dict round trips mid-training, add_param_group (new
group after steps, defaults filled in, duplicates refused), optimizer reprs and
argument errors, a hand-written Adam and an Optimizer subclass with a closure;
ModuleList/ModuleDict/ParameterList/ParameterDict mutation, slicing and reprs,
named_modules/named_parameters with prefixes and duplicates, apply(), train()/eval()
propagation, persistent=False buffers, register_parameter(None), assignment errors,
extra_repr, Sequential insert/pop/append/OrderedDict, device idioms, no_grad /
enable_grad as decorators, set_grad_enabled; topk/sort(stable)/argsort/kthvalue/
median/unique(return_inverse, return_counts, dim), cumsum dims, roll/flip,
repeat_interleave, gather/scatter/scatter_add/scatter_reduce, where with scalars,
nan_to_num, clamp with tensor bounds, lerp/atan2, einsum forms, matmul broadcasting,
bmm/addmm/outer, tril/triu/diag offsets, norm p variants, cdist, cosine_similarity /
pairwise_distance (F. and modules), std/var corrections; int/bool/uint8 promotion,
int division and remainders, in-place dtype errors; tensor reprs (grad_fn,
requires_grad, tiny/huge/int/empty/-0.0/3-d/summarized, set_printoptions); second and
third derivatives through elementwise ops, reductions, linear algebra, losses,
indexing/where/sort/topk, a gradient penalty training loop, HVPs and
autograd.functional; MultiheadAttention (masks, per-head weights), SDPA with scale,
convolutions, pooling, a save/load checkpoint resumed mid-training.

Found, and fixed since (each script below now agrees with torch):

- utils/data.py default_collate: a batch of tuple samples (every TensorDataset
  batch) is a tuple, torch gives a list; strings are collated into a list, torch
  keeps a tuple; NumPy-array samples are not stacked into a tensor.
  Subset[list] returns a list of samples, torch indexes the dataset with the list.
  DataLoader lacks sampler= and batch_size=None, and batch_size=0 raises
  ZeroDivisionError (torch: ValueError); ConcatDataset and Dataset + Dataset missing.
- optim.py: an Optimizer subclass gets 'foreach' and 'differentiable' added to its
  defaults, param_groups and repr (torch's base class adds nothing);
  Tensor.addcmul_/addcdiv_ (used by hand-written optimizers) missing;
  lr_scheduler.ChainedScheduler missing.
- Tensor.to / Module.to refuse non_blocking= and copy=; Module.state_dict refuses
  prefix=; MultiheadAttention(kdim=, vdim=) raises NotImplementedError;
  nn.TransformerEncoderLayer missing.
- arithmetic: int tensor ** negative int tensor raises (torch computes it
  elementwise: 2 ** -1 == 0); only a Python int exponent is refused.
- autograd: `.grad` made by backward(create_graph=True) has grad_fn CloneBackward0,
  torch's is CopyBackwards; norm(p=0) backward leaves zeros in .grad, torch leaves
  None (its gradient is undefined).
- missing everyday functions (torch.X / Tensor.X): diff, dist, torch.cosine_similarity,
  torch.pairwise_distance, logit, hypot, diag_embed, mode, nanmean/nansum, Tensor.select,
  repeat_interleave(counts), einsum's sublist form, baddbmm, addmv, fliplr/flipud,
  cummax, quantile, count_nonzero, vstack, aminmax, xlogy, triu_indices,
  linalg.cross, tile, mv, inner, tensordot, broadcast_tensors, concat, Tensor.det.
  On the way: cummin, tril_indices, nn.TransformerEncoder, utils.data's samplers
  (Sampler, SequentialSampler, RandomSampler, BatchSampler, batch_sampler=) and
  default_convert.
"""

import io
from collections import OrderedDict

import numpy as np
import pytest
from tape_scripts import (
    cases,
    check,
    draws,
    init_from,
    no_address,
)

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


def T(torch, *shape, seed=0):
    return torch.tensor(draws(*shape, seed=seed), requires_grad=True)


def second(torch, f, x):
    """f(x), its gradient (with create_graph) and the gradient of a weighted sum of
    that gradient."""
    y = f(x)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    w = torch.arange(1.0, 1.0 + g.numel()).reshape(g.shape)
    (h,) = torch.autograd.grad((g * w).sum(), x)
    return y, g, h


# ==== (1) torch.utils.data ===============================================================


def loader_training_loop(torch):
    nn = torch.nn
    X, y = torch.tensor(draws(10, 3)), torch.tensor(draws(10, seed=1) > 0).long()
    m = init_from(nn.Linear(3, 2), torch)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    data = torch.utils.data.TensorDataset(X, y)
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    losses = []
    for _ in range(2):
        for xb, yb in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses, m.weight, m.bias


def loader_len_drop_last_and_dataset_indexing(torch):
    ds = torch.utils.data.TensorDataset(torch.arange(7.0), torch.arange(7) * 2)
    l1 = torch.utils.data.DataLoader(ds, batch_size=3)
    l2 = torch.utils.data.DataLoader(ds, batch_size=3, drop_last=True)
    last = [x for x, _ in l1][-1]
    return (
        len(l1),
        len(l2),
        last,
        len(ds),
        ds[2],
        ds[-1],
        ds[1:3],
        ds[torch.tensor([0, 4])],
    )


def loader_shuffle_with_generator_is_a_permutation(torch):
    ds = torch.utils.data.TensorDataset(torch.arange(10.0))
    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, shuffle=True, generator=g, drop_last=True
    )
    seen = torch.cat([b[0] for b in loader])
    everything = torch.cat([b[0] for b in torch.utils.data.DataLoader(ds, 4, True)])
    distinct = len(set(seen.tolist())) == 9
    return len(loader), seen.shape, distinct, sorted(everything.tolist())


def loader_collate_fn_and_float32(torch):
    ds = torch.utils.data.TensorDataset(torch.ones(5, 2, dtype=torch.float32))
    sizes = list(torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=len))
    dtypes = [b[0].dtype for b in torch.utils.data.DataLoader(ds, batch_size=2)]
    return sizes, dtypes


def random_split_fractions(torch):
    ds = torch.utils.data.TensorDataset(torch.arange(10.0))
    gen = torch.Generator().manual_seed(1)
    parts = torch.utils.data.random_split(ds, [0.5, 0.3, 0.2], generator=gen)
    every = sorted(i for p in parts for i in p.indices)
    odd = torch.utils.data.random_split(list(range(7)), [0.34, 0.33, 0.33])
    return (
        [len(p) for p in parts],
        every,
        type(parts[0]).__name__,
        [len(p) for p in odd],
    )


def random_split_same_seed_same_split(torch):
    ds = list(range(10))
    a = torch.utils.data.random_split(
        ds, [5, 5], generator=torch.Generator().manual_seed(3)
    )
    b = torch.utils.data.random_split(
        ds, [5, 5], generator=torch.Generator().manual_seed(3)
    )
    return a[0].indices == b[0].indices, type(a[0].indices).__name__


def random_split_lengths_not_summing(torch):
    torch.utils.data.random_split(list(range(7)), [3, 3])


def subset_int_index(torch):
    ds = torch.utils.data.TensorDataset(torch.arange(5.0), torch.arange(5))
    sub = torch.utils.data.Subset(ds, [4, 2, 0])
    return sub[1], len(sub), sub[-1]


def tensor_dataset_batches_are_lists(torch):
    ds = torch.utils.data.TensorDataset(
        torch.arange(6.0).reshape(3, 2), torch.arange(3)
    )
    batches = list(torch.utils.data.DataLoader(ds, batch_size=2))
    return [type(b).__name__ for b in batches]


def default_collate_tuple_fields_are_lists(torch):
    batch = [(1, 0.5, True), (2, 1.5, False)]
    return type(torch.utils.data.default_collate(batch)).__name__


def strings_collated_into_a_tuple(torch):
    data = [("a", 1.5), ("b", 2.5), ("c", 3.0)]
    return [b[0] for b in torch.utils.data.DataLoader(data, batch_size=2)]


def numpy_samples_stacked(torch):
    data = [np.array([1.0, float(i)]) for i in range(4)]
    return [b for b in torch.utils.data.DataLoader(data, batch_size=3)]


def subset_list_index(torch):
    ds = torch.utils.data.TensorDataset(torch.arange(5.0), torch.arange(5))
    return torch.utils.data.Subset(ds, [4, 2, 0])[[0, 2]]


def loader_batch_size_none(torch):
    ds = torch.utils.data.TensorDataset(torch.arange(3.0))
    return [b[0] for b in torch.utils.data.DataLoader(ds, batch_size=None)]


def loader_batch_size_zero(torch):
    ds = torch.utils.data.TensorDataset(torch.arange(3.0))
    list(torch.utils.data.DataLoader(ds, batch_size=0))


def loader_sampler(torch):
    ds = torch.utils.data.TensorDataset(torch.arange(6.0))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=[5, 3, 1, 0])
    return [b[0] for b in loader]


def concat_dataset(torch):
    a = torch.utils.data.TensorDataset(torch.arange(3.0))
    b = torch.utils.data.TensorDataset(torch.arange(2.0) + 10)
    c = torch.utils.data.ConcatDataset([a, b])
    loader = torch.utils.data.DataLoader(c, batch_size=2)
    return len(c), c[3], c[-1], [x for (x,) in loader]


def dataset_plus_dataset(torch):
    a = torch.utils.data.TensorDataset(torch.arange(3.0))
    b = torch.utils.data.TensorDataset(torch.arange(2.0) + 10)
    c = a + b
    return len(c), c[3]


COLLATE = "utils/data.py default_collate: "
DATA = {
    "TensorDataset + DataLoader training loop": loader_training_loop,
    "DataLoader len/drop_last, TensorDataset int/slice/tensor index": (
        loader_len_drop_last_and_dataset_indexing
    ),
    "DataLoader shuffle with a generator: a permutation": (
        loader_shuffle_with_generator_is_a_permutation
    ),
    "DataLoader collate_fn, float32 tensors": loader_collate_fn_and_float32,
    "random_split by fractions (torch's rounding)": random_split_fractions,
    "random_split: same seeded generator, same split": (
        random_split_same_seed_same_split
    ),
    "random_split: lengths not summing to len": random_split_lengths_not_summing,
    "Subset int index": subset_int_index,
    "a TensorDataset batch is a list": tensor_dataset_batches_are_lists,
    "default_collate of tuples gives a list": default_collate_tuple_fields_are_lists,
    "strings collated into a tuple": strings_collated_into_a_tuple,
    "NumPy-array samples stacked into a tensor": numpy_samples_stacked,
    "Subset[list] indexes the dataset with the list": subset_list_index,
    "DataLoader(batch_size=None): no batching": loader_batch_size_none,
    "DataLoader(batch_size=0) raises ValueError": loader_batch_size_zero,
    "DataLoader(sampler=)": loader_sampler,
    "ConcatDataset": concat_dataset,
    "Dataset + Dataset": dataset_plus_dataset,
}


@pytest.mark.parametrize("script", cases(DATA))
def test_data(script):
    check(script)


# ==== (2) schedulers and optimizers ======================================================


def sgd_on_one(torch, lr=1.0, **kw):
    w = torch.nn.Parameter(torch.tensor([1.0]))
    return torch.optim.SGD([w], lr=lr, **kw)


def two_groups(torch):
    w1 = torch.nn.Parameter(torch.tensor([1.0]))
    w2 = torch.nn.Parameter(torch.tensor([1.0]))
    return torch.optim.SGD([{"params": [w1]}, {"params": [w2], "lr": 0.5}], lr=1.0)


def lrs_over(torch, opt, sched, n, metrics=None):
    out = []
    for i in range(n):
        opt.step()
        sched.step() if metrics is None else sched.step(metrics[i])
        out.append(opt.param_groups[0]["lr"])
    return out


def plateau_max_cooldown_threshold(torch):
    opt = sgd_on_one(torch)
    s = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=0.5, patience=1, cooldown=2, threshold=0.1
    )
    vals = [1.0, 1.05, 1.08, 1.0, 0.9, 2.0, 2.1, 2.0, 1.0, 1.0, 1.0, 1.0]
    lrs = lrs_over(torch, opt, s, len(vals), vals)
    return lrs, s.num_bad_epochs, s.cooldown_counter, s.best, s.get_last_lr()


def plateau_eps_stops_tiny_updates(torch):
    opt = sgd_on_one(torch, lr=1e-7)
    s = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=0, eps=1e-7
    )
    return lrs_over(torch, opt, s, 4, [1.0] * 4)


def plateau_min_lr_per_group(torch):
    opt = two_groups(torch)
    s = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.1, patience=0, min_lr=[0.05, 0.2]
    )
    for v in [3, 3, 3, 3]:
        s.step(v)
    sd = s.state_dict()
    return (
        [g["lr"] for g in opt.param_groups],
        sd["best"],
        sd["last_epoch"],
        sd["min_lrs"],
    )


def plateau_bad_mode(torch):
    torch.optim.lr_scheduler.ReduceLROnPlateau(sgd_on_one(torch), mode="maximum")


def plateau_factor_one(torch):
    torch.optim.lr_scheduler.ReduceLROnPlateau(sgd_on_one(torch), factor=1.0)


def sequential_lr_warmup_then_decay(torch):
    opt = sgd_on_one(torch, lr=0.1)
    s1 = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3)
    s2 = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    s = torch.optim.lr_scheduler.SequentialLR(opt, [s1, s2], milestones=[3])
    lrs = [opt.param_groups[0]["lr"]] + lrs_over(torch, opt, s, 7)
    return lrs, s.get_last_lr(), s.last_epoch


def sequential_lr_three_schedulers(torch):
    opt = sgd_on_one(torch)
    sch = torch.optim.lr_scheduler
    a = sch.ConstantLR(opt, factor=0.5, total_iters=2)
    b = sch.StepLR(opt, step_size=2, gamma=0.1)
    c = sch.CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    return lrs_over(torch, opt, sch.SequentialLR(opt, [a, b, c], milestones=[2, 5]), 10)


def lambda_lr_one_lambda_per_group(torch):
    opt = two_groups(torch)
    s = torch.optim.lr_scheduler.LambdaLR(
        opt, [lambda e: 0.5**e, lambda e: 1 / (e + 1)]
    )
    out = []
    for _ in range(3):
        opt.step()
        s.step()
        out.append(s.get_last_lr())
    return out, s.base_lrs


def lambda_lr_wrong_number_of_lambdas(torch):
    torch.optim.lr_scheduler.LambdaLR(sgd_on_one(torch), [lambda e: 1.0, lambda e: 1.0])


def polynomial_lr(torch):
    opt = sgd_on_one(torch, lr=0.2)
    s = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=4, power=2.0)
    return lrs_over(torch, opt, s, 6)


def one_cycle_cos_lr_and_momentum(torch):
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    s = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=1.0,
        epochs=2,
        steps_per_epoch=5,
        pct_start=0.3,
        div_factor=10,
        final_div_factor=100,
    )
    out = []
    for _ in range(10):
        opt.step()
        s.step()
        g = opt.param_groups[0]
        out.append((g["lr"], g["momentum"]))
    g = opt.param_groups[0]
    return out, g["initial_lr"], g["max_lr"], g["min_lr"]


def one_cycle_stepped_too_often(torch):
    opt = sgd_on_one(torch)
    s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    for _ in range(4):
        opt.step()
        s.step()


def warm_restarts_fractional_epochs(torch):
    opt = sgd_on_one(torch)
    s = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=3, T_mult=2, eta_min=0.1
    )
    lrs = []
    for i in range(12):
        opt.step()
        s.step(i * 0.5)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, s.T_cur, s.T_i


def scheduler_and_optimizer_state_round_trip(torch):
    opt = sgd_on_one(torch)
    s = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    lrs_over(torch, opt, s, 3)
    opt2 = sgd_on_one(torch)
    opt2.load_state_dict(opt.state_dict())
    s2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=5, gamma=0.9)
    s2.load_state_dict(s.state_dict())
    return lrs_over(torch, opt2, s2, 3), s2.step_size, s2.last_epoch


def add_param_group_mid_training(torch):
    a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    b = torch.nn.Parameter(torch.tensor([3.0]))
    opt = torch.optim.Adam([a], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        (a**2).sum().backward()
        opt.step()
    opt.add_param_group({"params": b, "lr": 0.01, "betas": (0.5, 0.5)})
    for _ in range(2):
        opt.zero_grad()
        ((a**2).sum() + (b**3).sum()).backward()
        opt.step()
    g = opt.param_groups[1]
    return (
        a,
        b,
        sorted(g),
        g["eps"],
        g["betas"],
        opt.state[b]["step"],
        opt.state[a]["step"],
    )


def add_param_group_twice_the_same(torch):
    a = torch.nn.Parameter(torch.tensor([1.0]))
    opt = torch.optim.SGD([a], lr=0.1)
    opt.add_param_group({"params": [a]})


def add_param_group_fills_defaults(torch):
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([a], lr=0.1)
    opt.add_param_group({"params": [b], "momentum": 0.9})
    return [
        sorted((k, v) for k, v in g.items() if k != "params") for g in opt.param_groups
    ]


def adam_state_dict_into_new_optimizer_mid_training(torch):
    nn = torch.nn
    m = init_from(nn.Linear(3, 2), torch)
    x = torch.tensor(draws(4, 3))
    opt = torch.optim.Adam(m.parameters(), lr=0.05, amsgrad=True)
    for _ in range(2):
        opt.zero_grad()
        m(x).pow(2).sum().backward()
        opt.step()
    sd = opt.state_dict()
    m2 = nn.Linear(3, 2)
    m2.load_state_dict(m.state_dict())
    opt2 = torch.optim.Adam(m2.parameters(), lr=0.3)
    opt2.load_state_dict(sd)
    for o, mm in ((opt, m), (opt2, m2)):
        for _ in range(2):
            o.zero_grad()
            mm(x).pow(2).sum().backward()
            o.step()
    state_keys = sorted(sd["state"][0])
    return list(m.parameters()), list(m2.parameters()), sd["param_groups"], state_keys


def sgd_state_dict_and_repr(torch):
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    w.sum().backward()
    opt.step()
    sd = opt.state_dict()
    w2 = torch.nn.Parameter(torch.tensor([1.0]))
    adamw = torch.optim.AdamW([{"params": [w2]}, {"params": [], "lr": 0.5}], lr=0.1)
    return (
        sd["param_groups"],
        sd["state"],
        repr(adamw),
        torch.optim.SGD([w2]).defaults["lr"],
    )


def optimizer_empty_params(torch):
    torch.optim.SGD([], lr=0.1)


def optimizer_non_leaf(torch):
    torch.optim.SGD([torch.tensor([1.0], requires_grad=True) * 2], lr=0.1)


def optimizer_given_a_tensor(torch):
    torch.optim.SGD(torch.nn.Parameter(torch.tensor([1.0])), lr=0.1)


def handwritten_adam_out_of_place(torch):
    w = torch.tensor(draws(3), requires_grad=True)
    m, v = torch.zeros(3), torch.zeros(3)
    b1, b2, lr, eps = 0.9, 0.999, 0.1, 1e-8
    for t in range(1, 4):
        ((w**2).sum() + w.sin().sum()).backward()
        with torch.no_grad():
            g = w.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v = torch.addcmul(v * b2, g, g, value=1 - b2)
            denom = (v / (1 - b2**t)).sqrt().add_(eps)
            w -= lr / (1 - b1**t) * m / denom
        w.grad.zero_()
    return w, m, v


def handwritten_adam_in_place(torch):
    w = torch.tensor(draws(3), requires_grad=True)
    m, v = torch.zeros(3), torch.zeros(3)
    b1, b2, lr, eps = 0.9, 0.999, 0.1, 1e-8
    for t in range(1, 4):
        ((w**2).sum() + w.sin().sum()).backward()
        with torch.no_grad():
            g = w.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2**t)).sqrt().add_(eps)
            w.addcdiv_(m, denom, value=-lr / (1 - b1**t))
        w.grad.zero_()
    return w, m, v


def my_sgd_class(torch):
    class MySGD(torch.optim.Optimizer):
        def __init__(self, params, lr=0.1, momentum=0.0):
            super().__init__(params, dict(lr=lr, momentum=momentum))

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    st = self.state[p]
                    if "buf" not in st:
                        st["buf"] = torch.zeros_like(p)
                    st["buf"].mul_(group["momentum"]).add_(p.grad)
                    p.add_(st["buf"], alpha=-group["lr"])
            return loss

    return MySGD


def optimizer_subclass_with_closure(torch):
    m = init_from(torch.nn.Linear(3, 1), torch)
    opt = my_sgd_class(torch)(m.parameters(), lr=0.05, momentum=0.9)
    x = torch.tensor(draws(4, 3))

    def closure():
        opt.zero_grad()
        loss = m(x).pow(2).mean()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(3)]
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    opt.step()
    sched.step()
    return losses, list(m.parameters()), opt.param_groups[0]["lr"]


def optimizer_subclass_groups(torch):
    w = torch.nn.Parameter(torch.ones(1))
    opt = my_sgd_class(torch)([w], lr=0.1)
    return sorted(opt.param_groups[0]), sorted(opt.defaults), repr(opt)


def chained_scheduler(torch):
    opt = sgd_on_one(torch)
    a = torch.optim.lr_scheduler.ConstantLR(opt, factor=0.1, total_iters=2)
    b = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    return lrs_over(torch, opt, torch.optim.lr_scheduler.ChainedScheduler([a, b]), 4)


OPTIM = {
    "ReduceLROnPlateau mode=max, cooldown, rel threshold": (
        plateau_max_cooldown_threshold
    ),
    "ReduceLROnPlateau eps skips tiny updates": plateau_eps_stops_tiny_updates,
    "ReduceLROnPlateau per-group min_lr": plateau_min_lr_per_group,
    "ReduceLROnPlateau bad mode": plateau_bad_mode,
    "ReduceLROnPlateau factor=1": plateau_factor_one,
    "SequentialLR warmup then decay": sequential_lr_warmup_then_decay,
    "SequentialLR over three schedulers": sequential_lr_three_schedulers,
    "LambdaLR with a lambda per group": lambda_lr_one_lambda_per_group,
    "LambdaLR with the wrong number of lambdas": lambda_lr_wrong_number_of_lambdas,
    "PolynomialLR power 2, past total_iters": polynomial_lr,
    "OneCycleLR cos: lr and momentum": one_cycle_cos_lr_and_momentum,
    "OneCycleLR stepped past total_steps": one_cycle_stepped_too_often,
    "CosineAnnealingWarmRestarts with fractional epochs": (
        warm_restarts_fractional_epochs
    ),
    "StepLR + SGD state_dict round trip": scheduler_and_optimizer_state_round_trip,
    "add_param_group after steps (Adam)": add_param_group_mid_training,
    "add_param_group with a parameter already there": add_param_group_twice_the_same,
    "add_param_group fills in defaults": add_param_group_fills_defaults,
    "Adam state_dict into a new optimizer mid-training": (
        adam_state_dict_into_new_optimizer_mid_training
    ),
    "SGD state_dict, AdamW repr with an empty group, SGD default lr": (
        sgd_state_dict_and_repr
    ),
    "optimizer: empty parameter list": optimizer_empty_params,
    "optimizer: non-leaf tensor": optimizer_non_leaf,
    "optimizer: a tensor instead of an iterable": optimizer_given_a_tensor,
    "hand-written Adam (torch.addcmul)": handwritten_adam_out_of_place,
    "Optimizer subclass with a closure and StepLR": optimizer_subclass_with_closure,
    "Optimizer subclass: groups hold only its defaults": optimizer_subclass_groups,
    "hand-written Adam with addcmul_/addcdiv_": handwritten_adam_in_place,
    "ChainedScheduler": chained_scheduler,
}


@pytest.mark.parametrize("script", cases(OPTIM))
def test_optim(script):
    check(script)


# ==== (3) modules ========================================================================


def module_list_mutation(torch):
    nn = torch.nn
    ml = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
    ml.append(nn.Tanh())
    ml.extend([nn.Sigmoid()])
    ml.insert(1, nn.Identity())
    part = ml[1:3]
    del ml[0]
    ml[-1] = nn.GELU()
    names = [type(m).__name__ for m in ml]
    both = ml + nn.ModuleList([nn.ELU()])
    return repr(ml), type(part).__name__, len(part), names, repr(both)


def module_dict_mutation(torch):
    nn = torch.nn
    md = nn.ModuleDict({"b": nn.ReLU(), "a": nn.Linear(1, 1)})
    md["c"] = nn.Tanh()
    md.update([("d", nn.Sigmoid())])
    popped = md.pop("b")
    return list(md.keys()), repr(md), type(popped).__name__, "a" in md, len(md)


def parameter_list_and_dict(torch):
    nn = torch.nn
    pl = nn.ParameterList([nn.Parameter(torch.ones(2)), torch.zeros(3)])
    pl.append(torch.ones(1) * 2)
    pd = nn.ParameterDict({"w": nn.Parameter(torch.ones(2))})
    pd["v"] = torch.zeros(1)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.pl, self.pd = pl, pd

    names = [n for n, _ in M().named_parameters()]
    return (
        names,
        [type(p).__name__ for p in pl],
        repr(pl),
        repr(pd),
        pl[1].requires_grad,
    )


def named_modules_prefix_and_duplicates(torch):
    nn = torch.nn
    lin = nn.Linear(1, 1)
    m = nn.Sequential(lin, nn.Sequential(lin, nn.ReLU()), nn.ReLU())
    return (
        [n for n, _ in m.named_modules(prefix="net")],
        [n for n, _ in m.named_modules(remove_duplicate=False)],
        [n for n, _ in m.named_parameters(prefix="p", remove_duplicate=False)],
        [n for n, _ in m.named_parameters(recurse=False)],
        list(m.state_dict()),
    )


def apply_init(torch):
    nn = torch.nn
    m = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Sequential(nn.Linear(2, 2)))
    names = []

    def init(mod):
        names.append(type(mod).__name__)
        if isinstance(mod, nn.Linear):
            nn.init.constant_(mod.weight, 0.5)
            nn.init.zeros_(mod.bias)

    r = m.apply(init)
    return names, r is m, list(m.parameters())


def train_eval_propagation(torch):
    nn = torch.nn
    m = nn.Sequential(nn.Dropout(), nn.Sequential(nn.BatchNorm1d(2)))
    a = [x.training for x in m.modules()]
    r = m.eval()
    b = [x.training for x in m.modules()]
    m[1].train()
    c = [x.training for x in m.modules()]
    m.train(False)
    return a, b, c, r is m, [x.training for x in m.modules()]


def buffers_persistent_false(torch):
    nn = torch.nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("a", torch.ones(2))
            self.register_buffer("b", torch.zeros(1), persistent=False)
            self.lin = nn.Linear(1, 1)

    m = M()
    sd = {
        "a": torch.ones(2) * 3,
        "lin.weight": torch.ones(1, 1),
        "lin.bias": torch.ones(1),
    }
    result = m.load_state_dict(sd)
    return list(m.state_dict()), [n for n, _ in m.named_buffers()], result, m.a


def load_state_dict_unexpected_key(torch):
    m = torch.nn.Linear(1, 1)
    sd = {"weight": torch.ones(1, 1), "bias": torch.ones(1), "extra": torch.ones(1)}
    m.load_state_dict(sd)


def state_dict_keep_vars(torch):
    m = torch.nn.Linear(1, 1)
    a, b = m.state_dict()["weight"], m.state_dict(keep_vars=True)["weight"]
    return type(a).__name__, a.requires_grad, type(b).__name__, b.requires_grad


def register_parameter_and_buffer_none(torch):
    m = torch.nn.Module()
    m.register_parameter("w", None)
    m.register_buffer("b", None)
    return m.w, m.b, list(m.state_dict()), list(m.parameters())


def assign_tensor_to_parameter_attribute(torch):
    m = torch.nn.Linear(1, 1)
    m.weight = torch.ones(1, 1)


def missing_attribute(torch):
    return torch.nn.Linear(1, 1).foo


def submodule_lookup(torch):
    m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU())
    return (
        m.get_submodule("0").in_features,
        m.get_parameter("0.bias").shape,
        hasattr(m, "foo"),
        [n for n, _ in m.named_children()],
    )


def sequential_slicing_and_append(torch):
    nn = torch.nn
    m = init_from(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)), torch)
    x = torch.tensor(draws(3, 2), requires_grad=True)
    sub = m[:2]
    y = sub(x)
    y.sum().backward()
    m.append(nn.Sigmoid())
    return y, x.grad, type(sub).__name__, repr(m), len(m), repr(m[-1])


def sequential_ordered_dict_and_add_module(torch):
    nn = torch.nn
    m = nn.Sequential(OrderedDict([("fc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    m.add_module("out", nn.Linear(2, 1))
    m.register_module("sig", nn.Sigmoid())
    children = [n for n, _ in m.named_children()]
    return repr(m), m.fc.in_features, children, list(m.state_dict())


def sequential_insert_pop_extend(torch):
    nn = torch.nn
    m = nn.Sequential(nn.ReLU(), nn.Tanh())
    m.insert(1, nn.Sigmoid())
    p = m.pop(0)
    m.extend([nn.GELU()])
    return repr(m), repr(p)


def module_to_dtype_and_requires_grad_(torch):
    m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    m.to(torch.float32)
    a = m[0].weight.dtype
    m.to(dtype=torch.float64)
    r = m.requires_grad_(False)
    m[1].bias.requires_grad_(True)
    flags = [p.requires_grad for p in m.parameters()]
    return a, m[0].weight.dtype, type(m[0].weight).__name__, r is m, flags


def forward_hook_removed(torch):
    m = init_from(torch.nn.Linear(2, 1), torch)
    calls = []
    h = m.register_forward_hook(lambda mod, inp, out: calls.append(out.shape))
    m(torch.ones(3, 2))
    h.remove()
    m(torch.ones(1, 2))
    return calls


def extra_repr_and_kwargs_forward(torch):
    nn = torch.nn

    class Scale(nn.Module):
        def __init__(self, s):
            super().__init__()
            self.s = s
            self.w = nn.Parameter(torch.ones(2))

        def extra_repr(self):
            return f"s={self.s}"

        def forward(self, x, scale=1.0, *, bias=None):
            y = x * self.w * self.s * scale
            return y if bias is None else y + bias

    m = nn.Sequential(Scale(2.0), nn.Sequential(Scale(3)))
    x = torch.tensor([[1.0, 2.0]], requires_grad=True)
    y = m[0](x=x, scale=3.0, bias=torch.ones(2))
    y.sum().backward()
    return repr(m), str(m), y, x.grad, m[0].w.grad


def plain_containers_not_registered(torch):
    nn = torch.nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(2, 2)]
            self.d = {"a": nn.Linear(1, 1)}
            self.t = torch.ones(2, requires_grad=True)
            self.p = nn.Parameter(torch.ones(1))

    m = M()
    return [n for n, _ in m.named_parameters()], list(m.state_dict()), repr(m)


def delete_and_reset_bias(torch):
    m = torch.nn.Linear(2, 1)
    del m.bias
    m.bias = None
    m.extra = torch.nn.Parameter(torch.zeros(1))
    return [n for n, _ in m.named_parameters()], repr(m)


def flatten_unflatten_identity(torch):
    nn = torch.nn
    x = T(torch, 2, 3, 4)
    y = nn.Flatten()(x)
    z = nn.Unflatten(1, (4, 3))(y)
    w = nn.Flatten(0, 1)(x)
    (z.sin().sum() + w.cos().sum()).backward()
    ident = nn.Identity(54, unused="x")
    reprs = repr(nn.Flatten()), repr(nn.Unflatten(1, (4, 3))), repr(ident)
    return y.shape, z.shape, w.shape, x.grad, reprs, ident(x) is x


def grad_mode_decorators(torch):
    @torch.no_grad()
    def f(x):
        return x * 2

    @torch.no_grad
    def g(x):
        return x * 3

    @torch.enable_grad()
    def h(x):
        return x * 4

    x = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        inside = h(x).requires_grad
    with torch.set_grad_enabled(False):
        a = x * 2
    torch.set_grad_enabled(False)
    b = x * 2
    torch.set_grad_enabled(True)
    modes = a.requires_grad, b.requires_grad, (x * 2).requires_grad
    return f(x).requires_grad, g(x).requires_grad, f.__name__, inside, modes


def device_idioms(torch):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    m = torch.nn.Linear(2, 1).to(device)
    x = torch.ones(3, 2, device=device)
    y = x.to(device)
    return (
        str(device),
        repr(device),
        str(x.device),
        x.is_cuda,
        str(next(m.parameters()).device),
        y.device == device,
        y is x,
        x.to("cpu", torch.float32).dtype,
        x.to(torch.zeros(1, dtype=torch.int64)).dtype,
    )


def tensor_to_non_blocking(torch):
    return torch.ones(2).to("cpu", non_blocking=True)


def module_to_non_blocking(torch):
    m = torch.nn.Linear(2, 1)
    return m.to("cpu", non_blocking=True) is m


def tensor_to_copy(torch):
    x = torch.ones(2)
    return x.to("cpu", copy=True) is x


def state_dict_prefix(torch):
    m = torch.nn.Sequential(torch.nn.BatchNorm1d(2))
    return list(m.state_dict(prefix="model."))


def mha_kdim_vdim(torch):
    mha = torch.nn.MultiheadAttention(4, 2, kdim=3, vdim=5, batch_first=True)
    init_from(mha, torch)
    q, k, v = T(torch, 2, 3, 4), T(torch, 2, 6, 3, seed=1), T(torch, 2, 6, 5, seed=2)
    out, w = mha(q, k, v)
    out.sum().backward()
    return out, w, k.grad, v.grad, [n for n, _ in mha.named_parameters()], repr(mha)


def transformer_encoder_layer(torch):
    layer = torch.nn.TransformerEncoderLayer(
        d_model=4, nhead=2, dim_feedforward=8, dropout=0.0, batch_first=True
    )
    init_from(layer, torch)
    x = T(torch, 2, 3, 4)
    y = layer(x)
    y.sum().backward()
    return y, x.grad


MODULES = {
    "ModuleList append/extend/insert/slice/del/setitem/+": module_list_mutation,
    "ModuleDict set/update/pop": module_dict_mutation,
    "ParameterList/ParameterDict registration and reprs": parameter_list_and_dict,
    "named_modules/named_parameters prefix + duplicates": (
        named_modules_prefix_and_duplicates
    ),
    "Module.apply for init": apply_init,
    "train()/eval() propagate": train_eval_propagation,
    "register_buffer(persistent=False)": buffers_persistent_false,
    "load_state_dict with an unexpected key": load_state_dict_unexpected_key,
    "state_dict(keep_vars=True)": state_dict_keep_vars,
    "register_parameter/buffer None": register_parameter_and_buffer_none,
    "assigning a tensor to a Parameter attribute": assign_tensor_to_parameter_attribute,
    "a missing attribute": missing_attribute,
    "get_submodule/get_parameter": submodule_lookup,
    "Sequential slice forward, append": sequential_slicing_and_append,
    "Sequential(OrderedDict), add_module, register_module": (
        sequential_ordered_dict_and_add_module
    ),
    "Sequential insert/pop/extend": sequential_insert_pop_extend,
    "Module.to(dtype), requires_grad_": module_to_dtype_and_requires_grad_,
    "forward hook removed": forward_hook_removed,
    "extra_repr, forward with kwargs": extra_repr_and_kwargs_forward,
    "modules in plain lists/dicts and plain tensors not registered": (
        plain_containers_not_registered
    ),
    "del bias, bias=None, new Parameter attribute": delete_and_reset_bias,
    "Flatten/Unflatten/Identity": flatten_unflatten_identity,
    "no_grad/enable_grad decorators, set_grad_enabled": grad_mode_decorators,
    "device idioms": device_idioms,
    "Tensor.to(non_blocking=True)": tensor_to_non_blocking,
    "Module.to(non_blocking=True)": module_to_non_blocking,
    "Tensor.to(copy=True)": tensor_to_copy,
    "Module.state_dict(prefix=)": state_dict_prefix,
    "MultiheadAttention(kdim=, vdim=)": mha_kdim_vdim,
    "TransformerEncoderLayer": transformer_encoder_layer,
}


@pytest.mark.parametrize("script", cases(MODULES))
def test_modules(script):
    check(script)


# ==== (4) tensor methods =================================================================


def topk_sort_argsort(torch):
    x = T(torch, 3, 5)
    v, i = x.topk(2, dim=0, largest=False)
    v2, i2 = torch.topk(x, 3, sorted=True)
    (v.sum() + (v2 * torch.arange(3.0)).sum()).backward()
    t = torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0, 3.0], requires_grad=True)
    sv, si = t.sort(descending=True, stable=True)
    (sv * torch.arange(6.0)).sum().backward()
    a1 = torch.argsort(t.detach(), stable=True)
    a2 = torch.argsort(t.detach(), descending=True, stable=True)
    return v, i, v2, i2, x.grad, sv, si, t.grad, a1, a2


def kthvalue_median_ties(torch):
    x = torch.tensor([[1.0, 5.0, 2.0, 5.0], [3.0, 3.0, 0.0, -1.0]], requires_grad=True)
    k = x.kthvalue(2, dim=1, keepdim=True)
    me = x.median(dim=1)
    (k.values.sum() + me.values.sum() * 3).backward()
    return k.values, k.indices, me.values, me.indices, x.grad


def unique_variants(torch):
    x = torch.tensor([3, 1, 2, 3, 1, 5])
    u, inv, cnt = torch.unique(x, return_inverse=True, return_counts=True)
    m = torch.tensor([[1, 2], [1, 2], [0, 3]])
    u3, inv3 = torch.unique(m, dim=0, return_inverse=True)
    f = torch.unique(torch.tensor([2.0, 1.0, 2.0], requires_grad=True))
    return u, inv, cnt, x.unique(sorted=True), u3, inv3, f.requires_grad


def cumsum_roll_flip(torch):
    x = T(torch, 3, 4)
    a, b = x.cumsum(0), torch.cumsum(x, dim=-1)
    c, d = x.roll(1), torch.roll(x, shifts=(1, -2), dims=(0, 1))
    e, f = x.flip(0, 1), x.flip(-1)
    w = torch.arange(12.0).reshape(3, 4)
    (a.sin().sum() + b.cos().sum() + ((c + d + e + f) * w).sum()).backward()
    return a, b, c, d, e, f, x.grad


def repeat_interleave_forms(torch):
    x = T(torch, 2, 3)
    a = x.repeat_interleave(2)
    b = torch.repeat_interleave(x, torch.tensor([1, 0, 3]), dim=1)
    c = x.repeat_interleave(2, dim=0)
    (a.sum() + (b * b).sum() + c.sin().sum()).backward()
    return a, b, c, x.grad


def gather_scatter_family(torch):
    x = T(torch, 3, 4)
    idx = torch.tensor([[0, 1], [3, 3], [2, 0]])
    src = T(torch, 3, 2, seed=1)
    g = x.gather(1, idx)
    s = torch.zeros(3, 4).scatter_add(1, idx, src)
    s2 = x.scatter_add(1, idx, src)
    s3 = x.scatter(1, idx, src)
    s4 = x.scatter(1, idx, 2.5)
    total = g.pow(2).sum() + (s * s).sum() + s2.sin().sum() + s3.exp().sum()
    (total + s4.cos().sum()).backward()
    return g, s, s2, s3, s4, x.grad, src.grad


def scatter_reduce_forms(torch):
    x = T(torch, 5)
    idx = torch.tensor([0, 1, 0, 2, 1])
    base = torch.ones(3)
    a = base.scatter_reduce(0, idx, x, reduce="sum")
    b = base.scatter_reduce(0, idx, x, reduce="mean")
    c = base.scatter_reduce(0, idx, x, reduce="mean", include_self=False)
    d = torch.zeros(3).scatter_reduce(0, idx, x, reduce="amax", include_self=False)
    (a + b * 2 + c * 3 + d * 4).sum().backward()
    return a, b, c, d, x.grad


def where_nan_to_num_clamp(torch):
    x = T(torch, 4)
    a = torch.where(x > 0, x, 0.0)
    b = torch.where(x > 0, 1.0, x)
    c, d = torch.where(x > 0, 1.0, -1.0), torch.where(x > 0, 2, 0)
    lo = torch.tensor([-0.5, 0.0, 0.2, -1.0], requires_grad=True)
    hi = torch.tensor(0.5, requires_grad=True)
    e, f, g = x.clamp(min=lo, max=hi), torch.clamp(x, max=lo), x.clip(-0.1, 0.1)
    n = torch.tensor(
        [float("nan"), float("inf"), -float("inf"), 1.0], requires_grad=True
    )
    n1, n2 = n.nan_to_num(), torch.nan_to_num(n, nan=0.5, posinf=2.0, neginf=-3.0)
    total = a.sum() + (b * b).sum() + e.sum() + f.sum() * 2 + g.sum()
    (total + n1.sum() + n2.sum()).backward()
    return (
        a,
        b,
        c,
        d,
        e,
        f,
        g,
        n1,
        n2,
        x.grad,
        lo.grad,
        hi.grad,
        n.grad,
        torch.where(x > 0),
    )


def lerp_atan2(torch):
    a, b = T(torch, 4), T(torch, 4, seed=1)
    w = torch.tensor([0.0, 0.3, 1.0, 1.5], requires_grad=True)
    l1, l2, at = torch.lerp(a, b, 0.25), a.lerp(b, w), torch.atan2(a, b)
    (l1.sum() + l2.pow(2).sum() + at.sum()).backward()
    return l1, l2, at, a.grad, b.grad, w.grad


def einsum_forms(torch):
    A, B = T(torch, 2, 3, 4), T(torch, 2, 4, 5, seed=1)
    v = T(torch, 3, seed=2)
    r = [
        torch.einsum("bij,bjk->bik", A, B),
        torch.einsum("bii->b", A[:, :, :3]),
        torch.einsum("i,i->", v, v),
        torch.einsum("i,j->ij", v, v),
        torch.einsum("...jk,...kl->...jl", A, B),
        torch.einsum("bij->j", A),
        torch.einsum("ij->ji", v[:, None] * v),
        torch.einsum("bij,bjk", A, B),
        torch.einsum("ij,jk->ik", [A[0], B[0]]),
    ]
    sum(t.sin().sum() for t in r).backward()
    return r, A.grad, B.grad, v.grad


def matmul_family(torch):
    A, B, v = T(torch, 2, 1, 3, 4), T(torch, 5, 4, 2, seed=1), T(torch, 4, seed=2)
    r = [A @ B, A @ v, v @ B, torch.matmul(v, v)]
    C, D = T(torch, 2, 3, 4, seed=3), T(torch, 2, 4, 2, seed=4)
    M = T(torch, 3, 2, seed=5)
    r += [torch.bmm(C, D), torch.addmm(M, C[0], D[0], beta=2, alpha=0.5)]
    r += [torch.outer(M[:, 0], M[:, 1])]
    sum(t.pow(2).sum() for t in r).backward()
    return r, A.grad, B.grad, v.grad, C.grad, D.grad, M.grad


def bmm_shape_mismatch(torch):
    torch.bmm(torch.ones(2, 3, 4), torch.ones(3, 4, 2))


def tril_triu_diag_offsets(torch):
    x = T(torch, 4, 4)
    v = T(torch, 3, seed=1)
    r = [x.tril(-1), torch.triu(x, diagonal=2), torch.tril(x, 1)]
    r += [torch.diag(v, -1), torch.diag(x, 1)]
    sum(t.exp().sum() for t in r).backward()
    return r, x.grad, v.grad


def norm_variants(torch):
    x = T(torch, 3, 4)
    inf = float("inf")
    n = [
        x.norm(),
        x.norm(p=1),
        x.norm(p=inf),
        x.norm(p=3, dim=1),
        x.norm(dim=0, keepdim=True),
        x.norm(p="fro"),
        x.norm(p=0.5),
        x.norm(p=-inf, dim=1),
    ]
    sum(k.sum() for k in n).backward()
    return n, x.grad


def distances(torch):
    F = torch.nn.functional
    a, b, c = T(torch, 3, 4), T(torch, 3, 4, seed=1), T(torch, 5, 4, seed=2)
    r = [torch.cdist(a, c), torch.cdist(a, c, p=1), torch.cdist(a, c, p=float("inf"))]
    r += [F.cosine_similarity(a, b), F.cosine_similarity(a, b, dim=0)]
    r += [F.pairwise_distance(a, b), F.pairwise_distance(a, b, p=1, keepdim=True)]
    r += [torch.nn.CosineSimilarity(dim=1, eps=1e-6)(a, b[:1])]
    r += [torch.nn.PairwiseDistance(p=2.0, eps=1e-6)(a, b[:1])]
    sum(t.sum() for t in r).backward()
    reprs = repr(torch.nn.CosineSimilarity()), repr(torch.nn.PairwiseDistance())
    return r, a.grad, b.grad, c.grad, reprs


def distances_at_zero(torch):
    F = torch.nn.functional
    z = torch.zeros(2, 3, requires_grad=True)
    b = T(torch, 2, 3)
    cs = F.cosine_similarity(z, b)
    p = torch.tensor([[0.0, 1.0], [2.0, 2.0]], requires_grad=True)
    q = torch.tensor([[0.0, 1.0]], requires_grad=True)
    cd = torch.cdist(p, q)
    (cs.sum() + cd.sum()).backward()
    return cs, cd, z.grad, b.grad, p.grad, q.grad


def std_var_corrections(torch):
    x = T(torch, 3, 4)
    r = [
        x.std(),
        x.var(0),
        x.std(dim=1, unbiased=False),
        x.var(1, keepdim=True, correction=0),
        torch.std(x, 0, True),
    ]
    sum(k.sum() for k in r).backward()
    return r, x.grad


def index_select_narrow_unbind_masked_select(torch):
    x = T(torch, 3, 4)
    a = x.index_select(1, torch.tensor([3, 0, 3]))
    b, d = x.narrow(1, 1, 2), x.unbind(1)
    m = x > 0
    s = x.masked_select(m)
    (a.sum() + b.pow(2).sum() + d[2].sum() + (s * s).sum()).backward()
    return a, b, d, s, x.grad, m.nonzero(), torch.nonzero(m, as_tuple=True)


def chunk_split_movedim(torch):
    x = T(torch, 7, 2)
    a, b, c, d = x.chunk(3), x.split(3), x.split([2, 5]), torch.tensor_split(x, 3)
    (a[-1].sum() + b[-1].sum() * 2 + c[1].pow(2).sum() + d[0].sum()).backward()
    y = T(torch, 2, 3, 4)
    e, f, g = y.movedim(0, -1), torch.movedim(y, (0, 1), (2, 0)), y.swapaxes(0, 2)
    (e.sum() + (f * f).sum() + g.sin().sum() + y.mT.sum()).backward()
    shapes = [t.shape for t in a], [t.shape for t in b], [t.shape for t in d]
    return shapes, x.grad, e.shape, f.shape, g.shape, y.grad, e.is_contiguous()


def take_along_dim(torch):
    x = T(torch, 3, 4)
    i = torch.argsort(x, dim=1)
    r = torch.take_along_dim(x, i, dim=1)
    r2 = torch.take_along_dim(x, torch.tensor([0, 5, 11]))
    ((r * torch.arange(4.0)).sum() + r2.sum()).backward()
    return r, r2, x.grad


def with_grad(torch, f, *xs):
    out = f(*xs)
    out.sum().backward()
    return out, [x.grad for x in xs]


TENSOR_METHODS = {
    "topk, stable sort descending, argsort": topk_sort_argsort,
    "kthvalue, median along a dim with ties": kthvalue_median_ties,
    "unique: inverse, counts, dim, sorted, floats": unique_variants,
    "cumsum over dims, roll, flip": cumsum_roll_flip,
    "repeat_interleave int / tensor repeats / dim": repeat_interleave_forms,
    "gather / scatter / scatter_add (tensor and scalar src)": gather_scatter_family,
    "scatter_reduce sum/mean/amax, include_self": scatter_reduce_forms,
    "where with scalars, clamp with tensors, nan_to_num": where_nan_to_num_clamp,
    "lerp (scalar and tensor weight), atan2": lerp_atan2,
    "einsum forms (batch, trace, outer, ellipsis, implicit, list)": einsum_forms,
    "matmul broadcasting, bmm, addmm, outer": matmul_family,
    "bmm batch mismatch": bmm_shape_mismatch,
    "tril/triu/diag offsets": tril_triu_diag_offsets,
    "norm p variants": norm_variants,
    "cdist p, cosine_similarity, pairwise_distance (F. and modules)": distances,
    "cosine_similarity of a zero row, cdist at zero distance": distances_at_zero,
    "std/var unbiased/correction": std_var_corrections,
    "index_select, narrow, unbind, masked_select, nonzero": (
        index_select_narrow_unbind_masked_select
    ),
    "chunk/split/tensor_split sizes, movedim/swapaxes/mT": chunk_split_movedim,
    "take_along_dim": take_along_dim,
}


@pytest.mark.parametrize("script", cases(TENSOR_METHODS))
def test_tensor_methods(script):
    check(script)


def _x(torch, *shape, seed=0):
    return T(torch, *shape, seed=seed)


def _p(torch):
    return torch.tensor([0.1, 0.5, 0.9, 0.99], requires_grad=True)


EVERYDAY_FUNCTIONS = {
    "torch.diff(prepend=, append=)": lambda torch: with_grad(
        torch,
        lambda x: torch.diff(x, dim=1, prepend=torch.zeros(3, 1), append=x[:, :2]),
        _x(torch, 3, 4),
    ),
    "Tensor.diff(n=2)": lambda torch: with_grad(
        torch, lambda x: x.diff(n=2, dim=0), _x(torch, 4, 3)
    ),
    "torch.dist": lambda torch: with_grad(
        torch,
        lambda a, b: torch.dist(a, b, p=1),
        _x(torch, 3),
        _x(torch, 3, seed=1),
    ),
    "torch.cosine_similarity": lambda torch: with_grad(
        torch, torch.cosine_similarity, _x(torch, 2, 3), _x(torch, 2, 3, seed=1)
    ),
    "torch.pairwise_distance": lambda torch: with_grad(
        torch, torch.pairwise_distance, _x(torch, 2, 3), _x(torch, 2, 3, seed=1)
    ),
    "torch.logit(eps=)": lambda torch: with_grad(
        torch, lambda p: torch.logit(p, eps=0.2), _p(torch)
    ),
    "Tensor.logit": lambda torch: with_grad(torch, lambda p: p.logit(), _p(torch)),
    "torch.hypot": lambda torch: with_grad(
        torch, torch.hypot, _x(torch, 4), _x(torch, 4, seed=1)
    ),
    "torch.diag_embed(offset=)": lambda torch: with_grad(
        torch, lambda v: torch.diag_embed(v, offset=1), _x(torch, 2, 3)
    ),
    "torch.mode": lambda torch: torch.mode(
        torch.tensor([[1.0, 5.0, 2.0, 5.0], [3, 3, 0, -1]]), 1
    ),
    "Tensor.nanmean": lambda torch: with_grad(
        torch,
        lambda x: x.nanmean(),
        torch.tensor([1.0, float("nan"), 3.0], requires_grad=True),
    ),
    "torch.nansum": lambda torch: torch.nansum(torch.tensor([1.0, float("nan"), 3.0])),
    "Tensor.select": lambda torch: with_grad(
        torch, lambda x: x.select(0, -1), _x(torch, 3, 4)
    ),
    "torch.repeat_interleave(repeats) alone": lambda torch: torch.repeat_interleave(
        torch.tensor([2, 1, 3])
    ),
    "einsum sublist form": lambda torch: with_grad(
        torch,
        lambda a, b: torch.einsum(a, [0, 1], b, [1, 2], [0, 2]),
        _x(torch, 2, 3),
        _x(torch, 3, 4, seed=1),
    ),
    "torch.baddbmm": lambda torch: with_grad(
        torch,
        lambda c, a, b: torch.baddbmm(c, a, b, beta=0.5, alpha=2.0),
        _x(torch, 2, 3, 2),
        _x(torch, 2, 3, 4, seed=1),
        _x(torch, 2, 4, 2, seed=2),
    ),
    "torch.addmv": lambda torch: with_grad(
        torch,
        torch.addmv,
        _x(torch, 3),
        _x(torch, 3, 4, seed=1),
        _x(torch, 4, seed=2),
    ),
    "torch.fliplr/flipud": lambda torch: with_grad(
        torch, lambda x: torch.fliplr(x) + torch.flipud(x), _x(torch, 3, 3)
    ),
    "torch.cummax": lambda torch: with_grad(
        torch, lambda x: torch.cummax(x, 0).values, _x(torch, 5)
    ),
    "torch.quantile": lambda torch: with_grad(
        torch, lambda x: torch.quantile(x, torch.tensor([0.25, 0.9])), _x(torch, 7)
    ),
    "torch.count_nonzero": lambda torch: torch.count_nonzero(
        torch.tensor([[0, 1], [2, 0]]), dim=0
    ),
    "torch.vstack": lambda torch: with_grad(
        torch, lambda a, b: torch.vstack([a, b]), _x(torch, 3), _x(torch, 3, seed=1)
    ),
    "torch.aminmax": lambda torch: torch.aminmax(torch.tensor(draws(3, 4)), dim=1),
    "torch.xlogy": lambda torch: with_grad(
        torch,
        lambda x: torch.xlogy(x, torch.tensor([0.0, 2.0, 3.0])),
        torch.tensor([0.0, 1.0, 2.0], requires_grad=True),
    ),
    "torch.triu_indices": lambda torch: torch.triu_indices(3, 3, 1),
    "torch.linalg.cross": lambda torch: with_grad(
        torch, torch.linalg.cross, _x(torch, 2, 3), _x(torch, 2, 3, seed=1)
    ),
    "torch.tile": lambda torch: with_grad(
        torch, lambda x: torch.tile(x, (2, 1)), _x(torch, 2, 3)
    ),
    "torch.mv": lambda torch: with_grad(
        torch, torch.mv, _x(torch, 3, 4), _x(torch, 4, seed=1)
    ),
    "torch.inner": lambda torch: with_grad(
        torch, torch.inner, _x(torch, 2, 4), _x(torch, 3, 4, seed=1)
    ),
    "torch.tensordot": lambda torch: with_grad(
        torch,
        lambda a, b: torch.tensordot(a, b, dims=([1], [0])),
        _x(torch, 2, 4),
        _x(torch, 4, 3, seed=1),
    ),
    "torch.broadcast_tensors": lambda torch: [
        t.shape for t in torch.broadcast_tensors(torch.ones(3, 1), torch.ones(2))
    ],
    "torch.concat": lambda torch: torch.concat([torch.ones(2), torch.zeros(1)]),
    "Tensor.det": lambda torch: with_grad(torch, lambda a: a.det(), _x(torch, 3, 3)),
}


@pytest.mark.parametrize("script", cases(EVERYDAY_FUNCTIONS))
def test_everyday_functions(script):
    check(script)


# ==== (5) dtypes, promotion and printing ================================================


def int_division_and_remainders(torch):
    a, b = torch.tensor([7, -7, 6]), torch.tensor([2, 2, 4])
    f, g = torch.tensor([-3.5, 3.5, -3.0]), torch.tensor([2.0, -2.0, 2.0])
    return (
        a / b,
        a // b,
        a % b,
        torch.div(a, b, rounding_mode="trunc"),
        torch.div(a, b, rounding_mode="floor"),
        (a / 2).dtype,
        f % g,
        torch.remainder(f, g),
        torch.fmod(f, g),
        -7 % torch.tensor([3, -3]),
        torch.tensor([1.0, -1.0, 0.0]) / 0,
        torch.tensor([1, 0]) / 0,
    )


def int_floor_division_by_zero(torch):
    torch.tensor([1, 0]) // 0


def int_powers(torch):
    i = torch.tensor([2, 3])
    return i**0.5, 2 ** torch.tensor([1, 2]), 2.0 ** torch.tensor([1, 2]), i**2


def int_to_negative_python_int(torch):
    torch.tensor([2, 3]) ** -1


def int_to_negative_int_tensor(torch):
    return torch.tensor([2, 1, -1, 0]) ** torch.tensor([-1, -2, -3, 2])


def bool_arithmetic(torch):
    a, b = torch.tensor([True, False, True]), torch.tensor([True, True, False])
    return (
        a + b,
        a * b,
        a & b,
        a | b,
        a ^ b,
        ~a,
        a.sum(),
        a + 1,
        a * 2.5,
        a.float().mean(),
        -a.int(),
    )


def bool_subtraction(torch):
    torch.tensor([True]) - torch.tensor([False])


def bool_negation(torch):
    -torch.tensor([True])


def promotion_table(torch):
    i, f = torch.tensor([1, 2]), torch.tensor([1.0, 2.0], dtype=torch.float32)
    i32, i8 = torch.tensor(1, dtype=torch.int32), torch.tensor([1], dtype=torch.int8)
    u8 = torch.tensor([250], dtype=torch.uint8)
    return (
        (i + f).dtype,
        (i * 1.5).dtype,
        (f + torch.tensor(1.0)).dtype,
        (f + torch.tensor([1.0])).dtype,
        (i32 + i8).dtype,
        (u8 + i8).dtype,
        u8 + 10,
        u8 * 2,
        u8 - 251,
        torch.tensor([1, 2], dtype=torch.int32).sum().dtype,
        torch.tensor([True, True]).sum().dtype,
        torch.tensor([1, 2], dtype=torch.int8).cumsum(0).dtype,
        torch.tensor([1, 2], dtype=torch.int16).prod().dtype,
        torch.tensor([1, 2]) == torch.tensor([1.0, 2.5]),
        torch.tensor([1, 2]) < 1.5,
    )


def int_mean(torch):
    torch.tensor([1, 2]).mean()


def int_requires_grad(torch):
    torch.tensor([1, 2], requires_grad=True)


def int_in_place_float(torch):
    a = torch.tensor([1, 2])
    a += 1.5


def int_in_place_true_div(torch):
    a = torch.tensor([1, 2])
    a /= 2


def float_in_place_with_int_and_bool(torch):
    a = torch.tensor([1.5, 2.5])
    a += torch.tensor([1, 2])
    a *= True
    return a


def python_numbers_out(torch):
    a, b = torch.tensor(3), torch.tensor(2.5)
    return (
        int(a),
        float(b),
        a.item(),
        b.item(),
        bool(torch.tensor([1.0])),
        a.tolist(),
        torch.tensor([[1, 2]]).tolist(),
        f"{b:.2f}",
        f"{a}",
        a * 1.0 + b,
    )


def reprs_basic(torch):
    return [
        repr(torch.tensor([1.0, 2.0])),
        repr(torch.tensor([1, 2])),
        repr(torch.tensor([True])),
        repr(torch.tensor(3.0)),
        repr(torch.tensor([])),
        repr(torch.zeros(0, 3)),
        repr(torch.tensor([1.0], dtype=torch.float32)),
        repr(torch.tensor([1, 2], dtype=torch.int32)),
        repr(torch.tensor([1e-5, 1.0])),
        repr(torch.tensor([1e10, 1.0])),
        repr(torch.tensor([0.1, 100.0])),
        repr(torch.tensor([float("nan"), float("inf"), -1.0])),
        repr(torch.tensor([-0.0, 0.0, 1.0])),
        repr(torch.tensor([1e-10, 1e-12])),
        repr(torch.tensor([1e20])),
        repr(torch.tensor([0.0001, 0.001])),
        repr(torch.tensor([12345.678, 0.5])),
    ]


def reprs_with_autograd(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    f = torch.tensor([1.0, 2.5], dtype=torch.float32, requires_grad=True)
    return [
        repr(x),
        repr(x * 2),
        repr(x.sum()),
        repr(x[0]),
        no_address(repr((x * 2).grad_fn)),
        repr(torch.nn.Parameter(torch.tensor([1.0]))),
        repr(x.detach()),
        str(x),
        repr(x.mean(0, keepdim=True)),
        repr(f * 2),
        repr(torch.zeros(0, requires_grad=True)),
    ]


def reprs_large_and_shapes(torch):
    return [
        repr(torch.arange(2000.0)),
        repr(torch.arange(1200).reshape(40, 30)),
        repr(torch.tensor([[1e-8, 1.0], [3.0, 4e7]])),
        repr(torch.tensor([123456789.0])),
        repr(torch.tensor([1.5e-3, 2.25e-3])),
        repr(torch.tensor([-1, 100, 5])),
        repr(torch.tensor([[1, -20], [300, 4]])),
        repr(torch.tensor([10**12, 1])),
        repr(torch.arange(12.0).reshape(2, 3, 2) / 7),
        repr(torch.zeros(2, 0)),
        repr(torch.empty(0, dtype=torch.int64)),
        repr(torch.tensor([], dtype=torch.bool)),
    ]


def print_options(torch):
    torch.set_printoptions(precision=2)
    try:
        a = repr(torch.tensor([1.23456, 2.0]))
    finally:
        torch.set_printoptions(profile="default")
    torch.set_printoptions(sci_mode=False)
    try:
        b = repr(torch.tensor([1e-8, 1.0]))
    finally:
        torch.set_printoptions(profile="default")
    return a, b, repr(torch.tensor([1.23456, 2.0]))


DTYPES = {
    "int division, floor/trunc, remainders, /0": int_division_and_remainders,
    "int // 0": int_floor_division_by_zero,
    "int powers": int_powers,
    "int ** negative Python int": int_to_negative_python_int,
    "bool arithmetic": bool_arithmetic,
    "bool - bool": bool_subtraction,
    "-bool": bool_negation,
    "promotion table, uint8 wrap-around, reduction dtypes": promotion_table,
    "int mean": int_mean,
    "int requires_grad": int_requires_grad,
    "int += float": int_in_place_float,
    "int /= int": int_in_place_true_div,
    "float += int, *= True": float_in_place_with_int_and_bool,
    "Python numbers out of tensors": python_numbers_out,
    "reprs: dtypes, empties, sci mode, nan/inf, -0.0": reprs_basic,
    "reprs with requires_grad/grad_fn/Parameter": reprs_with_autograd,
    "reprs: summarized, int widths, 3-d, empty shapes": reprs_large_and_shapes,
    "set_printoptions precision / sci_mode": print_options,
    "int tensor ** negative int tensor": int_to_negative_int_tensor,
}


@pytest.mark.parametrize("script", cases(DTYPES))
def test_dtypes_and_printing(script):
    check(script)


# ==== (6) higher-order gradients =========================================================


def second_order_elementwise(torch):
    x = T(torch, 5)
    F = torch.nn.functional
    fs = [
        lambda t: t.sigmoid() * t.tanh(),
        lambda t: F.softplus(t, beta=2.0),
        F.gelu,
        F.silu,
        lambda t: F.elu(t, alpha=0.7),
        lambda t: t.abs().pow(1.5),
        torch.erf,
        lambda t: t.exp().log1p(),
        lambda t: torch.atan(t) * torch.asinh(t),
        F.logsigmoid,
        F.mish,
        lambda t: torch.sinh(t) / torch.cosh(t).pow(2),
    ]
    return [second(torch, f, x) for f in fs]


def second_order_reductions(torch):
    x = T(torch, 3, 4)
    F = torch.nn.functional
    fs = [
        lambda t: t.softmax(1),
        lambda t: t.log_softmax(0),
        lambda t: t.logsumexp(1),
        lambda t: t.norm(dim=1),
        lambda t: t.std(0),
        lambda t: t.var(1, unbiased=False),
        lambda t: t.prod(1),
        lambda t: t.cumsum(1).pow(2),
        lambda t: t.cumprod(0),
        lambda t: F.normalize(t, dim=1),
        lambda t: F.layer_norm(t, (4,)),
        lambda t: t.max(1).values ** 2,
    ]
    return [second(torch, f, x) for f in fs]


def second_order_linear_algebra(torch):
    x = T(torch, 3, 3)
    W = torch.tensor(draws(3, 3, seed=1))
    eye = torch.eye(3)
    fs = [
        lambda t: (t @ W @ t).tanh(),
        lambda t: torch.linalg.inv(t + 3 * eye),
        lambda t: torch.linalg.det(t).reshape(1) ** 2,
        lambda t: torch.einsum("ij,jk->ik", t, t.sin()),
        lambda t: t.T @ t,
        lambda t: torch.linalg.solve(t + 4 * eye, W),
    ]
    return [second(torch, f, x) for f in fs]


def second_order_losses(torch):
    F = torch.nn.functional
    x = T(torch, 4, 3)
    y = torch.tensor([0, 2, 1, 2])
    t = torch.tensor(draws(4, 3, seed=2)).sigmoid()
    fs = [
        lambda z: F.cross_entropy(z, y).reshape(1),
        lambda z: F.binary_cross_entropy_with_logits(z, t, reduction="none"),
        lambda z: F.smooth_l1_loss(z, t, beta=0.5, reduction="none"),
        lambda z: F.huber_loss(z, t, delta=0.3, reduction="none"),
        lambda z: F.kl_div(z.log_softmax(1), t, reduction="batchmean").reshape(1),
        lambda z: F.mse_loss(z.sin(), t).reshape(1),
        lambda z: F.binary_cross_entropy(z.sigmoid(), t, reduction="none"),
        lambda z: F.nll_loss(z.log_softmax(1), y, reduction="sum").reshape(1),
    ]
    return [second(torch, f, x) for f in fs]


def second_order_selection(torch):
    x = T(torch, 6)
    fs = [
        lambda t: torch.where(t > 0, t**3, t.exp()),
        lambda t: t.clamp(-0.5, 0.5) ** 2,
        lambda t: t[[0, 0, 3]] ** 3,
        lambda t: t.reshape(2, 3).T.reshape(-1) * t,
        lambda t: t.gather(0, torch.tensor([5, 1, 1])) ** 2,
        lambda t: torch.stack([t, t**2]).sum(0),
        lambda t: torch.cat([t[:2] ** 3, t[2:].sin()]),
        lambda t: t.sort().values ** 3,
        lambda t: t.topk(2).values ** 2,
        lambda t: t.masked_fill(t < 0, 0.0) ** 3,
        lambda t: torch.maximum(t, t.flip(0)) ** 2,
    ]
    return [second(torch, f, x) for f in fs]


def third_order(torch):
    x = torch.tensor([0.3, -1.2], requires_grad=True)
    y = (x.sin() * x.exp()).sum()
    g1 = torch.autograd.grad(y, x, create_graph=True)[0]
    g2 = torch.autograd.grad(g1.sum(), x, create_graph=True)[0]
    g3 = torch.autograd.grad(g2.sum(), x)[0]
    return g1, g2, g3


def hvp_of_a_model(torch):
    nn = torch.nn
    m = init_from(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), torch)
    x, y = torch.tensor(draws(5, 3)), torch.tensor(draws(5, 1, seed=1))
    loss = nn.functional.mse_loss(m(x), y)
    ps = list(m.parameters())
    gs = torch.autograd.grad(loss, ps, create_graph=True)
    hv = torch.autograd.grad(sum(g.sum() for g in gs), ps)
    return loss, gs, hv


def gradient_penalty_training(torch):
    nn = torch.nn
    m = init_from(nn.Sequential(nn.Linear(2, 4), nn.Softplus(), nn.Linear(4, 1)), torch)
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    x = torch.tensor(draws(6, 2), requires_grad=True)
    for _ in range(3):
        opt.zero_grad()
        out = m(x)
        (gx,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        loss = out.mean() + 10 * ((gx.norm(2, dim=1) - 1) ** 2).mean()
        loss.backward()
        opt.step()
    return loss, list(m.parameters()), x.grad


def grad_outputs_then_backward(torch):
    x = T(torch, 3)
    (g,) = torch.autograd.grad(
        x**3, x, grad_outputs=torch.tensor([1.0, 2.0, 3.0]), create_graph=True
    )
    g.sum().backward()
    return g, x.grad


def autograd_functional_api(torch):
    a, b = torch.tensor(draws(3)), torch.tensor(draws(3, seed=1))
    v = torch.ones(3)
    af = torch.autograd.functional
    return (
        af.jacobian(lambda t: t.tanh() * t.sum(), a),
        af.hessian(lambda p, q: (p.sin() * q).sum(), (a, b)),
        af.vjp(lambda t: t**2, a, v),
        af.jvp(lambda t: t**2, a, v),
        af.hvp(lambda t: (t**3).sum(), a, v),
    )


def backward_create_graph_grad_values(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (x**3).sum().backward(create_graph=True)
    g = x.grad
    gg = torch.autograd.grad(g.sum(), x)[0]
    return g, gg, g.requires_grad


def backward_create_graph_grad_fn(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    (x**3).sum().backward(create_graph=True)
    return no_address(repr(x.grad.grad_fn))


def norm_p0_leaves_grad_none(torch):
    x = torch.tensor([0.0, 1.5, -2.0, 0.0], requires_grad=True)
    n = x.norm(p=0)
    n.backward()
    return n, x.grad


HIGHER_ORDER = {
    "2nd order: elementwise activations": second_order_elementwise,
    "2nd order: softmax/norms/var/prod/cumprod/layer_norm/max": (
        second_order_reductions
    ),
    "2nd order: matmul, inv, det, einsum, solve": second_order_linear_algebra,
    "2nd order: losses": second_order_losses,
    "2nd order: where/clamp/indexing/sort/topk/maximum": second_order_selection,
    "3rd order": third_order,
    "HVP of a model by two autograd.grad calls": hvp_of_a_model,
    "gradient penalty training loop (Adam)": gradient_penalty_training,
    "autograd.grad(grad_outputs=, create_graph) then backward": (
        grad_outputs_then_backward
    ),
    "autograd.functional jacobian/hessian/vjp/jvp/hvp": autograd_functional_api,
    "backward(create_graph=True) then grad of .grad": backward_create_graph_grad_values,
    ".grad's grad_fn after backward(create_graph=True)": backward_create_graph_grad_fn,
    "norm(p=0).backward() leaves .grad None": norm_p0_leaves_grad_none,
}


@pytest.mark.parametrize("script", cases(HIGHER_ORDER))
def test_higher_order(script):
    check(script)


# ==== (7) everyday script pieces =========================================================


def accuracy_idioms(torch):
    logits = torch.tensor(draws(8, 3))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    pred = logits.argmax(1)
    correct = (pred == y).sum().item()
    acc = (pred == y).float().mean().item()
    return (
        correct,
        acc,
        (pred == y).sum(),
        pred.eq(y).sum().item() / len(y),
        torch.max(logits, 1)[1],
    )


def parameters_to_vector_and_count(torch):
    m = init_from(torch.nn.Linear(3, 2), torch)
    v = torch.nn.utils.parameters_to_vector(m.parameters())
    torch.nn.utils.vector_to_parameters(v * 2, m.parameters())
    return (
        v,
        list(m.parameters()),
        sum(p.numel() for p in m.parameters() if p.requires_grad),
    )


def checkpoint_resume(torch):
    nn = torch.nn
    m = init_from(nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 3), nn.Tanh()), torch)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    x = torch.tensor(draws(4, 2))
    w = torch.tensor(draws(4, 3, seed=5))
    m(x).mul(w).sum().backward()
    opt.step()
    buf = io.BytesIO()
    ck = {"epoch": 3, "model": m.state_dict(), "opt": opt.state_dict(), "loss": 0.5}
    torch.save(ck, buf)
    buf.seek(0)
    ck = torch.load(buf)
    m2 = nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 3), nn.Tanh())
    m2.load_state_dict(ck["model"])
    opt2 = torch.optim.Adam(m2.parameters(), lr=0.1)
    opt2.load_state_dict(ck["opt"])
    for o, mm in ((opt, m), (opt2, m2)):
        o.zero_grad()
        mm(x).mul(w).pow(2).sum().backward()
        o.step()
    bn = m2[0]
    return (
        ck["epoch"],
        ck["loss"],
        list(m2.parameters()),
        list(m.parameters()),
        bn.running_mean,
        bn.num_batches_tracked,
    )


def one_hot_and_normalize(torch):
    F = torch.nn.functional
    y = torch.tensor([0, 2, 1])
    x = T(torch, 3, 4)
    a, b = F.normalize(x), F.normalize(x, p=1, dim=0)
    c = F.normalize(torch.zeros(2, 2, requires_grad=True))
    (a.sum() + b.pow(2).sum()).backward()
    hot = (
        F.one_hot(y),
        F.one_hot(y, num_classes=5),
        F.one_hot(torch.tensor([[1], [0]])).shape,
    )
    return hot, a, b, c, x.grad


def one_hot_negative(torch):
    torch.nn.functional.one_hot(torch.tensor([-1, 0]))


def random_creation_dtypes(torch):
    torch.manual_seed(0)
    p = torch.randperm(10)
    return (
        p.dtype,
        sorted(p.tolist()),
        torch.randint(0, 5, (3,)).dtype,
        torch.rand(2, 3).dtype,
        torch.randn(2, dtype=torch.float32).dtype,
        torch.randn_like(torch.ones(2, 2)).shape,
        sorted(set(torch.nn.functional.dropout(torch.ones(1000), 0.25).tolist())),
    )


def creation_dtype_inference(torch):
    return [
        torch.full((2,), 3).dtype,
        torch.full((2,), 3.0).dtype,
        torch.full((1,), True).dtype,
        torch.arange(5).dtype,
        torch.arange(0, 1, 0.25),
        torch.arange(1, 4, dtype=torch.float32).dtype,
        torch.arange(-1.0, 1.0, 0.3),
        torch.linspace(0, 1, 5),
        torch.linspace(0, 10, 4, dtype=torch.int64),
        torch.tensor([1, 2.5]).dtype,
        torch.tensor([True, 1]).dtype,
        torch.eye(2, 3),
        torch.tensor(np.array([1, 2], dtype=np.int32)).dtype,
        torch.tensor(np.float32(2.5)).dtype,
        torch.tensor([torch.tensor(1.0), torch.tensor(2.0)]),
        torch.ones_like(torch.tensor([1.0]), dtype=torch.int64).dtype,
    ]


def numpy_memory_sharing(torch):
    a = np.array([1.0, 2.0])
    t1, t2, t3 = torch.from_numpy(a), torch.as_tensor(a), torch.tensor(a)
    a[0] = 10.0
    t1[1] = 7.0
    t3.numpy()[0] = -1.0
    return t1, t2, t3, a.tolist()


def new_tensor_methods(torch):
    x = torch.tensor([1.0, 2.0], dtype=torch.float32)
    return (
        x.new_zeros(3).dtype,
        x.new_ones((2, 2)).shape,
        x.new_full((2,), 7),
        x.new_tensor([1, 2]).dtype,
        x.new_empty(0).shape,
        x.type_as(torch.tensor([1])).dtype,
    )


def in_place_chain_on_a_view(torch):
    x = torch.tensor(draws(2, 3), requires_grad=True)
    y = x * 1
    y.add_(1).mul_(2).sub_(torch.ones(2, 3), alpha=0.5).div_(3).pow_(2).clamp_(max=2.0)
    y[:, 1:] += 1
    v = y.view(-1)
    v[0] = 100.0
    y.t()[1].mul_(2)
    (y * torch.arange(6.0).reshape(2, 3)).sum().backward()
    return y, v, x.grad, no_address(repr(y.grad_fn))


def max_forms_and_return_types(torch):
    x = torch.tensor([[1.0, 3.0, 3.0], [2.0, -1.0, 0.0]], requires_grad=True)
    a, b = x.max(), torch.max(x, dim=0)
    c, d, e = (
        torch.max(x, torch.zeros(1)),
        x.argmax(dim=1, keepdim=True),
        x.amax(dim=(0, 1)),
    )
    (a + b.values.sum() + c.sum() + e).backward()
    return a, b.values, b.indices, c, d, e, x.grad, type(b).__name__


def index_with_0d_tensors(torch):
    x = torch.tensor(draws(4, 3), requires_grad=True)
    i = torch.tensor(2)
    y, z, w = x[i], x[i, torch.tensor(1)], x[..., i]
    (y.sum() + z + w.sum()).backward()
    return y, z, w, x.grad


def mha_padding_mask_per_head_weights(torch):
    mha = init_from(torch.nn.MultiheadAttention(4, 2, batch_first=True), torch)
    x = T(torch, 2, 3, 4)
    mask = torch.tensor([[False, False, True], [False, False, False]])
    out, w = mha(x, x, x, key_padding_mask=mask, average_attn_weights=False)
    (out.sum() + w.pow(2).sum()).backward()
    return out, w, x.grad, mha.in_proj_weight.grad, mha.out_proj.bias.grad


def mha_causal_bool_mask(torch):
    mha = init_from(torch.nn.MultiheadAttention(4, 1), torch)
    x = T(torch, 3, 2, 4)
    causal = torch.triu(torch.ones(3, 3, dtype=torch.bool), diagonal=1)
    out, w = mha(x, x, x, attn_mask=causal)
    _, w2 = mha(x, x, x, need_weights=False)
    out.sum().backward()
    return out, w, w2, x.grad


def sdpa_with_scale(torch):
    q, k, v = T(torch, 2, 3, 4), T(torch, 2, 5, 4, seed=1), T(torch, 2, 5, 2, seed=2)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3)
    out.sum().backward()
    return out, q.grad, k.grad, v.grad


def conv_and_pool(torch):
    F = torch.nn.functional
    c1 = init_from(torch.nn.Conv1d(2, 3, 4, padding="same", dilation=2), torch)
    c2 = init_from(
        torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, bias=False), torch
    )
    x1, x2, x3 = T(torch, 1, 2, 7), T(torch, 2, 4, 5, 5, seed=1), T(torch, 1, 2, 5, 5)
    y1, y2 = c1(x1), c2(x2)
    a = F.max_pool2d(x3, 2, ceil_mode=True)
    b = F.avg_pool2d(x3, 3, stride=2, padding=1, count_include_pad=False)
    c = F.adaptive_avg_pool2d(x3, (2, 3))
    d, idx = F.max_pool2d(x3, 2, return_indices=True)
    total = y1.sum() + y2.pow(2).sum() + a.sum() + b.pow(2).sum() + c.sum() + d.sum()
    total.backward()
    grads = x1.grad, x2.grad, x3.grad, c1.weight.grad, c2.weight.grad
    return y1, y2, a, b, c, idx, grads, repr(c2)


def gradient_clamped_by_hooks(torch):
    m = init_from(torch.nn.Linear(3, 1), torch)
    for p in m.parameters():
        p.register_hook(lambda g: g.clamp(-0.1, 0.1))
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    x = torch.tensor(draws(4, 3))
    for _ in range(2):
        opt.zero_grad()
        (m(x) * 10).sum().backward()
        opt.step()
    return list(m.parameters())


def embedding_max_norm(torch):
    emb = init_from(torch.nn.Embedding(5, 3, max_norm=1.0), torch)
    out = emb(torch.tensor([[0, 2, 0], [4, 3, 2]]))
    out.sum().backward()
    return out, emb.weight, emb.weight.grad


EVERYDAY = {
    "accuracy idioms": accuracy_idioms,
    "parameters_to_vector / vector_to_parameters / count": (
        parameters_to_vector_and_count
    ),
    "checkpoint dict through torch.save/load, resumed": checkpoint_resume,
    "one_hot, normalize (p, dim, zero rows)": one_hot_and_normalize,
    "one_hot of a negative class": one_hot_negative,
    "random creation dtypes, dropout values": random_creation_dtypes,
    "creation dtype inference": creation_dtype_inference,
    "from_numpy/as_tensor share memory, tensor copies": numpy_memory_sharing,
    "new_* methods, type_as": new_tensor_methods,
    "in-place chain, view writes, transposed in-place": in_place_chain_on_a_view,
    "max forms and return types": max_forms_and_return_types,
    "indexing with 0-d tensors": index_with_0d_tensors,
    "MultiheadAttention key_padding_mask, per-head weights": (
        mha_padding_mask_per_head_weights
    ),
    "MultiheadAttention causal bool mask, need_weights=False": mha_causal_bool_mask,
    "scaled_dot_product_attention(scale=)": sdpa_with_scale,
    "conv same/dilation/groups/stride, pooling variants": conv_and_pool,
    "gradients clamped by tensor hooks while training": gradient_clamped_by_hooks,
    "Embedding(max_norm=) renormalizes in place": embedding_max_norm,
}


@pytest.mark.parametrize("script", cases(EVERYDAY))
def test_everyday(script):
    check(script)
