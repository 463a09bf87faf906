"""Prepare a TFDS dataset once, before training: `python -m simpool_jax.data.prepare NAME --data_dir D`.

imagenet2012 needs its two tars in the manual dir first (see `sources.IMAGENET_STEPS`); other TFDS
builders download their files (this is the one place where the project reaches the network);
fashion_mnist builds from the local IDX files.
"""

from __future__ import annotations

import argparse
import os

import tensorflow_datasets as tfds

from simpool_jax.data import sources

IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> tfds.core.DatasetBuilder:
    """Build `name` under `data_dir` (TFRecords, readable by tf.data); returns the prepared builder."""
    if name == "fashion_mnist":
        return sources._fashion_mnist_builder(data_dir, None, download=True)
    builder = tfds.builder(name, data_dir=data_dir)
    manual_dir = manual_dir or os.path.join(builder.data_dir_root, "downloads", "manual")
    if name.startswith("imagenet2012"):
        missing = [t for t in IMAGENET_TARS if not os.path.isfile(os.path.join(manual_dir, t))]
        if missing:
            raise FileNotFoundError(f"missing {missing} in {manual_dir}.\n"
                                    + sources.IMAGENET_STEPS.format(data_dir=builder.data_dir_root, manual_dir=manual_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--manual_dir", default=None, help="where manually downloaded files are (default: <data_dir>/downloads/manual)")
    args = parser.parse_args()
    builder = prepare(args.name, args.data_dir, args.manual_dir)
    print(f"{builder.name} prepared in {builder.data_path}: {dict((k, v.num_examples) for k, v in builder.info.splits.items())}")


if __name__ == "__main__":
    main()
