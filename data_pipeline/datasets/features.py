"""The TFDS feature spec of particle datasets (5HDB and simulated), declared once."""
import numpy as np
import tensorflow_datasets as tfds


def particle_features(size: int) -> tfds.features.FeaturesDict:
    """`image` (canonical), `observed` (rotated, noisy), `angle` (radians), `index` in the split
    and `conformation`; images are float32 [size, size, 1], zlib-compressed in the records."""
    image = tfds.features.Tensor(shape=(size, size, 1), dtype=np.float32,
                                 encoding=tfds.features.Encoding.ZLIB)
    return tfds.features.FeaturesDict({
        "image": image,
        "observed": image,
        "angle": np.float32,
        "index": np.int64,
        "conformation": np.int64,
    })
