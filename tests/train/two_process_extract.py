"""Worker of test_distributed.py: `extract_features` in one of several jax.distributed processes
(SIMPOOL_* variables set by the test) must return every process's real examples, padding dropped.

Process p holds examples p * 100 + 8 * b + i (i < 8) of global batch b; the last three of its
batch 1 are padding. Features are 2 * id, so the expected output is known in closed form.
"""

import numpy as np

from simpool_jax.parallel import make_mesh, maybe_initialize_distributed

maybe_initialize_distributed()

import jax  # noqa: E402

from simpool_jax.evaluate.extract import extract_features  # noqa: E402

LOCAL = 8
mesh = make_mesh((("data", -1),))
sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
batches = []
for b in range(2):
    ids = jax.process_index() * 100 + LOCAL * b + np.arange(LOCAL)
    host = {"image": np.repeat(ids[:, None], 3, axis=1).astype(np.float32),
            "label": ids.astype(np.int32), "mask": ~((b == 1) & (np.arange(LOCAL) >= 5))}
    batches.append({k: jax.make_array_from_process_local_data(sharding, v)
                    for k, v in host.items()})
features, labels = extract_features(jax.jit(lambda x: 2 * x), batches)
want = [p * 100 + LOCAL * b + i for p in range(jax.process_count()) for b in range(2)
        for i in range(LOCAL) if not (b == 1 and i >= 5)]
assert sorted(labels.tolist()) == want, labels
np.testing.assert_array_equal(features, 2 * np.repeat(labels[:, None], 3, axis=1))
print(f"process {jax.process_index()}: {len(labels)} examples", flush=True)
