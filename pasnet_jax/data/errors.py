"""DatasetError under the name the input pipeline imports it by."""

from pasnet_jax.errors import DatasetError  # pylint: disable=unused-import
