""" timm-drnet: Dynamic Resolution Networks (DRNet, NeurIPS 2021) for every timm classifier.

``import timm_drnet`` registers the ``drnet_*`` models with timm.
"""
from .allocator import keep_freed_memory
from .aoti import AOTI_CONFIG_NAME, AotiDRNet, AotiDRNetOutput, export_aoti, write_package
from .budget import BudgetCalibration, cost_offsets, set_budget, solve_budget, solve_budget_top1
from .calibration import calibration_outputs, closest_step
from .cascade import CascadeCalibration, cascade_stops, set_cascade_budget, solve_cascade_threshold
from .costs import CostTable, CostTables, count_cost_table, count_macs, measure_cost_table, measure_latency_ms, \
    unit_label
from .drnet import DRNet, DRNetOutput
from .export import ONNX_CONFIG_NAME, SINGLE_IMAGE_NAME, OnnxDRNet, OnnxDRNetOutput, export_onnx, write_graph
from .graphs import prepare_for_export
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
    fix_same_padding,
    fold_batch_norms,
    guard_single_value_norms,
    resolution_norms,
    running_stats_frozen,
    select_resolution_bn,
    set_active_resolution,
)
from .loss import DISTILL_MODES, DRNetLoss, DRNetLossParts, FlopsLoss, MultiResolutionLoss, distill_kl
from .models import DRNET_BACKBONES, create_drnet
from .onnx_routing import single_image_graph
from .precision import Precision, create_precision
from .pretrained import cache_efficientnet_lite0, cache_timm_weights, remap_efficientnet_pytorch
from .routing import (
    MIN_INPUT_SIZE,
    PREDICTOR_GRADS,
    Cascade,
    check_cascade,
    check_resolutions,
    gumbel_straight_through,
    top_probability,
)

__version__ = '0.1.0'
