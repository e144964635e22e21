from .fold_bn import fold_batch_norms
from .norm_stats import checkpoint_with_batch_stats, guard_single_value_norms, running_stats_frozen
from .predictor import (
    BACKBONE_FEATURE_INDEX, BackbonePredictor, FoldsForInference, InvertedResidual, MobilePredictor, PREDICTORS,
    ResNetPredictor, create_predictor,
)
from .resolution_norm import (
    ResolutionBatchNorm,
    convert_resolution_bn,
    is_batch_norm,
    is_layer_norm,
    resolution_norms,
    select_resolution_bn,
    set_active_resolution,
    unused_branch_anchor,
)
from .resize import AxisResize, TapResize, resize_matrix, strided_taps
from .same_padding import StaticPadConv2d, fix_same_padding
