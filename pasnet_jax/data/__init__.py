"""Datasets and the input pipeline.

Importing this package registers the TFDS builders `ucf101_frames`,
`hmdb51_frames` and `synthetic_actions` (building one imports TensorFlow).
Finding and building the dataset a config names lives in
`pasnet_jax.data.datasets`; the input pipeline in `pasnet_jax.data.pipeline`
(imported on its own: it loads Grain and JAX) reads prepared datasets
through `pasnet_jax.data.records`, without TensorFlow.
"""

from pasnet_jax.data import hmdb51
from pasnet_jax.data import synthetic
from pasnet_jax.data import ucf101
from pasnet_jax.errors import DatasetError
from pasnet_jax.data.video import decode_video
