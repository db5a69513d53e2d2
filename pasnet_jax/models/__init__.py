"""PAS-Net and its parts, as Flax modules.

`create_model(config.model, num_classes)` builds the network a config
describes; the parts are importable on their own.
"""

from pasnet_jax.models.appearance import Appearance
from pasnet_jax.models.fusion import Fusion
from pasnet_jax.models.pasnet import create_model
from pasnet_jax.models.pasnet import PASNet
from pasnet_jax.models.pose import OpenPose
from pasnet_jax.models.spatiotemporal import Spatiotemporal

__all__ = ['Appearance', 'Fusion', 'OpenPose', 'PASNet', 'Spatiotemporal',
           'create_model']
