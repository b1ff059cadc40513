"""torch.utils.data: Dataset, TensorDataset, ConcatDataset, Subset, random_split,
the samplers and a single-process DataLoader.

Shuffling and splitting draw from the tape's generator (or the one given), so
manual_seed makes them repeatable (the order differs from torch's, whose generator
is another).
"""

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from ..creation import as_tensor, numpy_generator, tensor
from ..functions import stack
from ..tensor import Tensor


class Dataset:
    """Base class: a map-style dataset defines __getitem__ and __len__."""

    def __getitem__(self, index):
        raise NotImplementedError

    def __add__(self, other):
        return ConcatDataset([self, other])


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
        """A list picks several samples at once: the dataset indexed with the list
        of their indices, as torch does."""
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """The samples of each dataset in turn; cumulative_sizes[i] is the number of
    samples in datasets[: i + 1]."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise AssertionError("datasets should not be an empty iterable")
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise ValueError(
                    "absolute value of index should not exceed dataset length"
                )
            idx = len(self) + idx
        i = int(np.searchsorted(self.cumulative_sizes, idx, side="right"))
        start = self.cumulative_sizes[i - 1] if i else 0
        return self.datasets[i][idx - start]


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


COLLATE_ERROR = (
    "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or "
    "lists; found {}"
)


def default_collate(batch):
    """Samples to a batch as torch stacks them: tensors and NumPy arrays stacked,
    Python floats made a float64 tensor and ints one of theirs, NumPy scalars one
    of their dtype, strings left as the sequence of samples, and dicts,
    namedtuples and sequences collated field by field (a tuple's fields in a list,
    as torch keeps them for backwards compatibility)."""
    first = batch[0]
    if isinstance(first, Tensor):
        return stack(batch)
    if isinstance(first, np.ndarray):
        if first.dtype.kind in "SaUO":
            raise TypeError(COLLATE_ERROR.format(first.dtype))
        return default_collate([as_tensor(b) for b in batch])
    if isinstance(first, np.bool_ | np.number | np.object_):
        return as_tensor(batch)
    if isinstance(first, float):
        return tensor(batch, dtype=np.float64)
    if isinstance(first, int):
        return tensor(batch)
    if isinstance(first, str | bytes):
        return batch
    if isinstance(first, Mapping):
        return _like(first, {k: default_collate([s[k] for s in batch]) for k in first})
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(default_collate(f) for f in zip(*batch, strict=False)))
    if isinstance(first, Sequence):
        if any(len(s) != len(first) for s in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(f) for f in zip(*batch, strict=True)]
        return fields if isinstance(first, tuple) else _like(first, fields)
    raise TypeError(COLLATE_ERROR.format(type(first)))


def default_convert(data):
    """One sample as DataLoader(batch_size=None) gives it: NumPy arrays and
    scalars made tensors, inside dicts, namedtuples and sequences too (a tuple
    becomes a list, as in default_collate); anything else as it is."""
    if isinstance(data, np.ndarray | np.generic) and not isinstance(
        data, np.str_ | np.bytes_
    ):
        if isinstance(data, np.ndarray) and data.dtype.kind in "SaUO":
            return data
        return as_tensor(data)
    if isinstance(data, Mapping):
        return _like(data, {k: default_convert(v) for k, v in data.items()})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        items = [default_convert(d) for d in data]
        return items if isinstance(data, tuple) else _like(data, items)
    return data


def _like(container, items):
    """`items` (a dict or list) in a container of `container`'s type, as torch
    keeps it (an OrderedDict, a list subclass), where that type can be built from
    them."""
    try:
        return type(container)(items)
    except TypeError:
        return items


class Sampler:
    """Base class: iterating gives dataset indices (or, for a batch sampler, lists
    of them)."""

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A new random order of the indices on each pass (num_samples of them: whole
    permutations, then part of one), or with replacement num_samples independent
    draws."""

    def __init__(
        self, data_source, replacement=False, num_samples=None, generator=None
    ):
        self.data_source, self.replacement = data_source, replacement
        self._num_samples, self.generator = num_samples, generator
        if not isinstance(replacement, bool):
            raise TypeError(
                "replacement should be a boolean value, but got replacement="
                f"{replacement}"
            )
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(
                "num_samples should be a positive integer value, but got "
                f"num_samples={self.num_samples}"
            )

    @property
    def num_samples(self):
        if self._num_samples is None:
            return len(self.data_source)
        return self._num_samples

    def __iter__(self):
        n, rng = len(self.data_source), numpy_generator(self.generator)
        if self.replacement:
            yield from rng.integers(n, size=self.num_samples).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from rng.permutation(n).tolist()
        if self.num_samples % n:
            yield from rng.permutation(n)[: self.num_samples % n].tolist()

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Lists of batch_size indices from `sampler`, in its order; drop_last drops a
    short final list."""

    def __init__(self, sampler, batch_size, drop_last):
        if (
            not isinstance(batch_size, int)
            or isinstance(batch_size, bool)
            or batch_size <= 0
        ):
            raise ValueError(
                "batch_size should be a positive integer value, but got "
                f"batch_size={batch_size}"
            )
        if not isinstance(drop_last, bool):
            raise ValueError(
                f"drop_last should be a boolean value, but got drop_last={drop_last}"
            )
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size


class DataLoader:
    """Batches of `batch_size` samples of `dataset`, their indices drawn from
    `sampler` (any iterable of indices; by default in order or, with shuffle,
    permuted anew on each pass) or given batch by batch by `batch_sampler`;
    drop_last drops a short final batch. batch_size=None turns batching off: each
    sample comes through default_convert instead of default_collate. Workers would
    only load faster and pinned memory only copy faster to a GPU, so num_workers
    and pin_memory are accepted and the batches are loaded here, one by one."""

    def __init__(
        self,
        dataset,
        batch_size=1,
        shuffle=None,
        sampler=None,
        batch_sampler=None,
        num_workers=0,
        collate_fn=None,
        pin_memory=False,
        drop_last=False,
        *,
        generator=None,
    ):
        if num_workers < 0:
            raise ValueError(
                "num_workers option should be non-negative; use num_workers=0 to "
                "disable multiprocessing."
            )
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, "
                    "shuffle, sampler, and drop_last"
                )
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError(
                "batch_size=None option disables auto-batching and is mutually "
                "exclusive with drop_last"
            )
        if sampler is None:
            sampler = (
                RandomSampler(dataset, generator=generator)
                if shuffle
                else SequentialSampler(dataset)
            )
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.dataset, self.batch_size, self.drop_last = dataset, batch_size, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.generator = generator
        if collate_fn is None:
            collate_fn = default_convert if batch_sampler is None else default_collate
        self.collate_fn = collate_fn

    def __len__(self):
        return len(self.sampler if self.batch_sampler is None else self.batch_sampler)

    def __iter__(self):
        if self.batch_sampler is None:
            for index in self.sampler:
                yield self.collate_fn(self.dataset[index])
            return
        for indices in self.batch_sampler:
            yield self.collate_fn([self.dataset[i] for i in indices])
