from .fold_bn import fold_batch_norms
from .predictor import (
    BackbonePredictor, InvertedResidual, MobilePredictor, PREDICTORS, ResNetPredictor, create_predictor,
)
from .resolution_norm import (
    ResolutionBatchNorm,
    convert_resolution_bn,
    is_batch_norm,
    resolution_norms,
    select_resolution_bn,
    set_active_resolution,
)
from .resize import TapResize, resize_taps
