"""Datasets and the input pipeline.

Importing this package registers the TFDS builders `ucf101_frames`,
`hmdb51_frames` and `synthetic_actions` (building one imports TensorFlow).
The input pipeline lives in `pasnet_jax.data.pipeline` (imported on its own:
it loads Grain and JAX); it reads prepared datasets through
`pasnet_jax.data.records`, without TensorFlow.
"""

from pasnet_jax.data import hmdb51
from pasnet_jax.data import synthetic
from pasnet_jax.data import ucf101
from pasnet_jax.data.errors import DatasetError
from pasnet_jax.data.video import decode_video
