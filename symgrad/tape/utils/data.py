"""torch.utils.data: Dataset, TensorDataset, Subset, random_split and a
single-process DataLoader.

Shuffling and splitting draw from the tape's generator (or the one given), so
manual_seed makes them repeatable (the order differs from torch's, whose generator
is another).
"""

import math
import warnings

import numpy as np

from ..creation import numpy_generator, tensor
from ..functions import stack
from ..tensor import Tensor


class Dataset:
    """Base class: a map-style dataset defines __getitem__ and __len__."""

    def __getitem__(self, index):
        raise NotImplementedError


class TensorDataset(Dataset):
    """Sample i is (t[i] for each tensor t), all sharing the first dimension."""

    def __init__(self, *tensors):
        if any(len(t) != len(tensors[0]) for t in tensors):
            raise AssertionError("Size mismatch between tensors")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return len(self.tensors[0])


class Subset(Dataset):
    """The samples of `dataset` at `indices`, in that order."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __getitem__(self, index):
        if isinstance(index, list):
            return [self.dataset[self.indices[i]] for i in index]
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


def random_split(dataset, lengths, generator=None):
    """Subsets of the given lengths (or fractions of len(dataset), the remainder
    given out one by one from the first) of one random permutation of the
    samples."""
    n = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1")
        sizes = [math.floor(n * fraction) for fraction in lengths]
        for i in range(n - sum(sizes)):
            sizes[i % len(sizes)] += 1
        for i, size in enumerate(sizes):
            if size == 0:
                warnings.warn(
                    f"Length of split at index {i} is 0. This might result in an "
                    "empty dataset.",
                    stacklevel=2,
                )
        lengths = sizes
    if sum(lengths) != n:
        raise ValueError(
            "Sum of input lengths does not equal the length of the input dataset!"
        )
    order = numpy_generator(generator).permutation(n).tolist()
    ends = np.cumsum(lengths)
    return [
        Subset(dataset, order[end - size : end])
        for end, size in zip(ends, lengths, strict=True)
    ]


def default_collate(batch):
    """Samples to a batch as torch stacks them: tensors stacked, numbers made a
    tensor, tuples/lists/dicts collated field by field."""
    first = batch[0]
    if isinstance(first, Tensor):
        return stack(batch)
    if isinstance(first, int | float | np.number):
        return tensor(batch)
    if isinstance(first, dict):
        return {k: default_collate([s[k] for s in batch]) for k in first}
    if isinstance(first, tuple | list):
        fields = [default_collate(list(f)) for f in zip(*batch, strict=True)]
        return tuple(fields) if isinstance(first, tuple) else fields
    return batch


class DataLoader:
    """Batches of `batch_size` samples of `dataset`, in order or shuffled anew on
    each pass; drop_last drops a short final batch. Workers would only load faster,
    so num_workers is accepted and the batches are loaded here, one by one."""

    def __init__(
        self,
        dataset,
        batch_size=1,
        shuffle=False,
        drop_last=False,
        collate_fn=None,
        num_workers=0,
        generator=None,
    ):
        self.dataset, self.batch_size = dataset, batch_size
        self.generator = generator
        self.shuffle, self.drop_last = shuffle, drop_last
        self.collate_fn = default_collate if collate_fn is None else collate_fn

    def __len__(self):
        n = len(self.dataset) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)

    def __iter__(self):
        n = len(self.dataset)
        rng = numpy_generator(self.generator)
        order = rng.permutation(n) if self.shuffle else range(n)
        for b in range(len(self)):
            indices = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.collate_fn([self.dataset[int(i)] for i in indices])
