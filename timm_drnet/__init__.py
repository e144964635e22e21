""" timm-drnet: Dynamic Resolution Networks (DRNet, NeurIPS 2021) for every timm classifier.

``import timm_drnet`` registers the ``drnet_*`` models with timm.
"""
from .budget import BudgetCalibration, calibrate_budget, cost_offsets, solve_budget, solve_budget_top1
from .cascade import (
    Cascade,
    CascadeCalibration,
    calibrate_cascade,
    cascade_stops,
    check_cascade,
    solve_cascade_threshold,
    top_probability,
)
from .costs import CostTable, count_macs, measure_cost_table, measure_latency_ms, unit_label
from .drnet import PREDICTOR_GRADS, DRNet, DRNetOutput, check_resolutions, gumbel_straight_through
from .export import ONNX_CONFIG_NAME, OnnxDRNet, OnnxDRNetOutput, export_onnx
from .hub import (
    UnsafeCheckpointError,
    add_to_hf_cache,
    load_state_dict_file,
    push_to_hf_hub,
    read_state_dict_keys,
    save_for_hf,
)
from .layers import (
    BackbonePredictor,
    MobilePredictor,
    PREDICTORS,
    ResNetPredictor,
    ResolutionBatchNorm,
    TapResize,
    convert_resolution_bn,
    create_predictor,
    fold_batch_norms,
    resolution_norms,
    select_resolution_bn,
    set_active_resolution,
)
from .loss import DRNetLoss, DRNetLossParts, FlopsLoss
from .models import DRNET_BACKBONES, create_drnet
from .pretrained import cache_efficientnet_lite0, cache_timm_weights, remap_efficientnet_pytorch

__version__ = '0.1.0'
