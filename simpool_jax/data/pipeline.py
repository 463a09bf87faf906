"""Per-host tf.data pipelines and global `jax.Array` batches.

Train: source (file-level shuffle) -> shuffle(buffer, seed) -> repeat -> per-example `_rng` ->
load + decode -> pp -> batch(global / process_count) -> [batch pp, e.g. mixup] -> arrays sharded on
the mesh's data axis, `prefetch` batches ahead (their host->device copies overlap the step).
Eval: the same without shuffle/repeat, each example tagged `mask=True`, then an endless stream of
zero examples with `mask=False` cut at the step count of the largest shard, so every host runs the
same number of steps and each example is counted exactly once (big_vision's padding trick).

Several processes: each reads only its own contiguous shard of the split (see sources.py) and
shuffles and augments it with its own stream (`_rng` from the seed and the process index), so the
global batch of a step is the concatenation of the processes' batches, and depends on the process
count (as in big_vision; a count-independent order would make every host read the whole split). A
resume is bit-exact with the same process count. tests/train/test_distributed.py checks that two
processes train exactly as one process fed those concatenated batches.

Image-folder sources may hold corrupt or unreadable files: their read + decode stage ignores errors
(each logged by tf.data), and the iterator counts the skipped examples from the gaps in the stream
positions `_idx`, with one warning per epoch (train) or at the end (eval) giving the count.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
import tensorflow as tf

from simpool_jax.data.registry import Example, chain, get_op, get_pp, split_spec
from simpool_jax.data.sources import Source, get_dataset

log = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE


def _one_thread_per_tf_op() -> None:
    """tf.data already keeps every core busy with parallel `map` calls, one example each; TF's
    default intra-op pool lets each image op split its work over the cores again, and the two
    levels oversubscribe them: one thread per op gives +28% (DINO multi-crop) and +25% (supervised)
    img/s on 2 cores, and is neutral on 1 (bench/input_pipeline.py; the per-dataset option
    `threading.max_intra_op_parallelism=1` measured no gain). TF reads the setting only before its
    runtime starts, so it is made at import; if a user's code started TF first, theirs stands. The
    only other TF work in the package is writing TensorBoard scalars."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:
        log.info("TensorFlow already started; its intra-op thread count is left as it is")


_one_thread_per_tf_op()

_COMMON = {"name": None, "split": None, "data_dir": None, "pp": None, "batch_size": None, "seed": 0,
           "prefetch": 2, "cache_raw": False, "data_axis": "data", "limit": None, "download": False}
TRAIN_DEFAULTS = {**_COMMON, "shuffle_buffer": 10_000, "pp_batch": None, "start_step": 0}
EVAL_DEFAULTS = dict(_COMMON)


def _settings(config: Mapping[str, Any], defaults: dict) -> dict:
    given = dict(config.items())
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown input config keys {unknown}; known: {sorted(defaults)}")
    out = {**defaults, **given}
    missing = [k for k, v in out.items() if v is None and k in ("name", "split", "pp", "batch_size")]
    if missing:
        raise ValueError(f"input config needs {missing}")
    return out


def _decode_stage(source: Source, spec) -> tuple:
    """(load + pp up to the first `decode`, the rest of the pp): errors of the first are skippable."""
    pieces = split_spec(spec)
    names = [p.split("(")[0].strip() if isinstance(p, str) else None for p in pieces]
    cut = names.index("decode") + 1 if "decode" in names else 0
    return chain([source.load] + [get_op(p) for p in pieces[:cut]]), get_pp(pieces[cut:])


def _tag(ds: tf.data.Dataset, seed: int, process_index: int) -> tf.data.Dataset:
    """Add `_idx` (position in this host's stream) and `_rng` (a stateless seed of it)."""
    base = tf.constant([seed, process_index], tf.int64)

    def tag(i, d):
        return {**d, "_idx": i, "_rng": tf.random.experimental.stateless_fold_in(base, i)}

    return ds.enumerate().map(tag, num_parallel_calls=AUTOTUNE)


def _preprocess(ds: tf.data.Dataset, source: Source, spec) -> tf.data.Dataset:
    decode, rest = _decode_stage(source, spec)
    ds = ds.map(decode, num_parallel_calls=AUTOTUNE)
    if source.may_be_corrupt:
        ds = ds.ignore_errors(log_warning=True)
    return ds.map(rest, num_parallel_calls=AUTOTUNE)


def _local_batch(batch_size: int, process_count: int) -> int:
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {process_count} processes")
    return batch_size // process_count


def train_dataset(source: Source, pp, local_batch: int, *, seed: int = 0, shuffle_buffer: int = 10_000,
                  pp_batch=None, cache_raw: bool = False, start_step: int = 0) -> tf.data.Dataset:
    """The endless, shuffled host-batch stream of `source` (dicts of NumPy-convertible tensors).

    `start_step` resumes the stream after that many batches: the raw records before it are read and
    dropped undecoded, and since shuffling and augmentation depend only on the seed and the stream
    position, the batches are those an uninterrupted run would see (exactly so while no corrupt
    image has been skipped).
    """
    ds = source.get_tfdata(shuffle_seed=seed)
    if cache_raw:
        ds = ds.cache()
    ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    ds = _tag(ds, seed, source.process_index).skip(start_step * local_batch)
    ds = _preprocess(ds, source, pp).batch(local_batch, drop_remainder=True)
    if pp_batch:
        ds = ds.map(get_pp(pp_batch), num_parallel_calls=AUTOTUNE)
    return ds.prefetch(AUTOTUNE)


def eval_steps(source: Source, local_batch: int) -> int:
    """Batches every host runs: enough for the largest shard."""
    return math.ceil(max(source.process_sizes) / local_batch)


def _fill_by_repeating(batch: Example, local_batch: int) -> Example:
    """A short last batch filled up to `local_batch` with copies of its own examples (`mask`
    False on the copies). Copies leave every batch-wide statistic that is a min or max as the
    real examples' alone: SimPool's gamma-path minimum over the batch then equals the official
    code's, which runs a smaller last batch; zeros would enter that minimum."""
    n = tf.shape(batch["mask"])[0]
    index = tf.range(local_batch) % n
    out = {k: tf.gather(v, index) for k, v in batch.items()}
    out["mask"] = tf.range(local_batch) < n
    return {k: tf.ensure_shape(v, [local_batch, *batch[k].shape[1:]]) for k, v in out.items()}


def eval_dataset(source: Source, pp, local_batch: int, *, seed: int = 0, cache_raw: bool = False) -> tf.data.Dataset:
    """`eval_steps` host batches covering this shard once (`mask` marks real examples). A short
    last batch is filled with copies of its own examples; batches past the end of this shard
    (other hosts have more) are zeros."""
    ds = source.get_tfdata(shuffle_seed=None)
    if cache_raw:
        ds = ds.cache()
    ds = _preprocess(_tag(ds, seed, source.process_index), source, pp)
    ds = ds.map(lambda d: {**d, "mask": tf.constant(True)})
    spec = ds.element_spec
    if not all(s.shape.is_fully_defined() for s in spec.values()):
        raise ValueError(f"eval pp must give fixed-size features (e.g. end with central_crop); got {spec}")
    batches = ds.batch(local_batch).map(lambda b: _fill_by_repeating(b, local_batch))
    pad = tf.data.Dataset.from_tensors(
        {k: tf.zeros([local_batch, *s.shape], s.dtype) for k, s in spec.items()}).repeat()
    return batches.concatenate(pad).take(eval_steps(source, local_batch)).prefetch(AUTOTUNE)


def _device_dtype(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.int64:
        return x.astype(np.int32)
    if x.dtype == np.float64:
        return x.astype(np.float32)
    return x


class Batches:
    """Iterator of dicts of global `jax.Array`s (keys without a leading `_`), `prefetch` ahead.

    Counts the examples delivered (`seen`) and those skipped as unreadable (`skipped`), and warns with
    the count once per epoch (train) or when the pass ends (eval).
    """

    def __init__(self, dataset: tf.data.Dataset, sharding: jax.sharding.Sharding, per_process: int,
                 prefetch: int = 2, steps: int | None = None, train: bool = True):
        self.dataset, self.sharding, self.per_process = dataset, sharding, per_process
        self.prefetch, self.steps, self.train = max(prefetch, 1), steps, train
        self.seen = self.skipped = 0
        self._warned_epoch, self._warned = 0, 0
        self._it = self._generate()

    def __iter__(self) -> Iterator[dict[str, jax.Array]]:
        return self

    def __next__(self) -> dict[str, jax.Array]:
        return next(self._it)

    def to_global(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """One host batch -> global arrays, split along the leading axis over the data axis."""
        return {k: jax.make_array_from_process_local_data(self.sharding, _device_dtype(np.asarray(v)))
                for k, v in batch.items() if not k.startswith("_")}

    def _count(self, batch: Mapping[str, np.ndarray]) -> None:
        valid = batch["mask"] if "mask" in batch else np.ones(len(batch["_idx"]), bool)
        self.seen += int(valid.sum())
        if self.train:
            last = int(batch["_idx"].max())
            self.skipped = last + 1 - self.seen
            epoch = last // max(self.per_process, 1)
            if epoch > self._warned_epoch:
                self._warned_epoch = epoch
                self._warn()

    def _warn(self) -> None:
        if self.skipped > self._warned:
            self._warned = self.skipped
            log.warning("skipped %d unreadable or corrupt images so far (see the tf.data warnings for which)",
                        self.skipped)

    def _generate(self) -> Iterator[dict[str, jax.Array]]:
        queue: collections.deque = collections.deque()  # (host batch, its global arrays) in flight
        for batch in self.dataset.as_numpy_iterator():
            queue.append((batch, self.to_global(batch)))
            if len(queue) > self.prefetch:
                yield self._deliver(queue.popleft())
        while queue:
            yield self._deliver(queue.popleft())
        if not self.train:
            self.skipped = self.per_process - self.seen
            self._warn()

    def _deliver(self, item: tuple) -> dict[str, jax.Array]:
        self._count(item[0])
        return item[1]


def _sharding(mesh: jax.sharding.Mesh, axis: str, batch_size: int) -> jax.sharding.NamedSharding:
    if axis not in mesh.shape:
        raise ValueError(f"mesh has no axis {axis!r}; its axes are {dict(mesh.shape)}")
    if batch_size % mesh.shape[axis]:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {mesh.shape[axis]} devices of axis {axis!r}")
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))


def check_labels_fit(source: Source, num_classes: int | None) -> None:
    """ValueError if `source` has more classes than a classifier of `num_classes` outputs (labels
    past the last output would train and score as all-zero targets); None skips the check."""
    if num_classes is not None and source.num_classes > num_classes:
        raise ValueError(
            f"{source.name} {source.split} has {source.num_classes} classes but the model has "
            f"{num_classes} outputs (config.model.num_classes)")


def check_eval_inputs(configs: Iterable[Mapping[str, Any]], mesh: jax.sharding.Mesh,
                      num_classes: int | None = None) -> None:
    """Raise now, at start-up, if an eval input cannot be read: a batch that does not split over
    the processes and the mesh's data axis, a missing dataset or split, a bad pp spec (the
    pipeline is built, not run), more classes than a classifier's `num_classes`. A trainer
    evaluates at the end, and an error there would come after all the work."""
    for config in configs:
        c = _settings(config, EVAL_DEFAULTS)
        _sharding(mesh, c["data_axis"], c["batch_size"])
        source, local = _source(c, None, None)
        check_labels_fit(source, num_classes)
        eval_dataset(source, c["pp"], local, seed=c["seed"], cache_raw=c["cache_raw"])


def _source(c: dict, process_index: int | None, process_count: int | None) -> tuple[Source, int]:
    if process_index is None or process_count is None:
        process_index, process_count = jax.process_index(), jax.process_count()
    source = get_dataset(c["name"], c["split"], c["data_dir"], process_index=process_index,
                         process_count=process_count, limit=c["limit"], download=c["download"])
    return source, _local_batch(c["batch_size"], process_count)


def make_train_iterator(config: Mapping[str, Any], mesh: jax.sharding.Mesh, *, process_index: int | None = None,
                        process_count: int | None = None) -> Batches:
    """Endless global training batches from `config` (keys: TRAIN_DEFAULTS; batch_size is global).

    process_index/count default to JAX's; pass them to simulate hosts in one process.
    """
    c = _settings(config, TRAIN_DEFAULTS)
    sharding = _sharding(mesh, c["data_axis"], c["batch_size"])
    source, local = _source(c, process_index, process_count)
    ds = train_dataset(source, c["pp"], local, seed=c["seed"], shuffle_buffer=c["shuffle_buffer"],
                       pp_batch=c["pp_batch"], cache_raw=c["cache_raw"], start_step=c["start_step"])
    return Batches(ds, sharding, source.num_examples_per_process, c["prefetch"], train=True)


def make_eval_iterator(config: Mapping[str, Any], mesh: jax.sharding.Mesh, *, process_index: int | None = None,
                       process_count: int | None = None) -> Batches:
    """One pass of padded global eval batches (`mask` marks real examples); `.steps` batches."""
    c = _settings(config, EVAL_DEFAULTS)
    sharding = _sharding(mesh, c["data_axis"], c["batch_size"])
    source, local = _source(c, process_index, process_count)
    ds = eval_dataset(source, c["pp"], local, seed=c["seed"], cache_raw=c["cache_raw"])
    return Batches(ds, sharding, source.num_examples_per_process, c["prefetch"],
                   steps=eval_steps(source, local), train=False)
