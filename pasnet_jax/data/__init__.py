"""Datasets and the input pipeline.

Importing this package registers the TFDS builders `ucf101_frames`,
`hmdb51_frames` and `synthetic_actions`. Finding and building the dataset a
config names lives in `pasnet_jax.data.datasets`, the tf.data pipeline in
`pasnet_jax.data.pipeline` (each imported on its own: they load TensorFlow).
"""

from pasnet_jax.data import hmdb51
from pasnet_jax.data import synthetic
from pasnet_jax.data import ucf101
from pasnet_jax.errors import DatasetError
from pasnet_jax.data.video import decode_video
