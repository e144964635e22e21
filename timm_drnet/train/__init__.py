""" Training: the stage forward, parameter groups, schedules, the epoch loop, resume and distributed helpers

``train.py`` parses flags into ``StageSettings`` and calls ``train_stage`` once per stage; everything it does
can be called from Python the same way.
"""
from .distributed import (
    Distributed, all_min, any_rank, average_gradients_hook, barrier, broadcast_from_primary, gather, reduce_sum,
)
from .params import predictor_param_groups
from .predictor import (
    PredictorFitSettings, ResolutionOutputs, fit_predictor, resolution_outputs, resolution_targets,
    train_predictor_stage,
)
from .resume import (
    GROWABLE_SETTINGS, RESUME_SETTINGS, CheckpointWriteError, EpochInterrupted, NonFiniteLossError, StopSignal,
    TrainingInterrupted, epoch_batches, resume_position, resume_settings, write_checkpoint,
)
from .schedule import GumbelSchedule, gumbel_tau, resolve_flops_target
from .stage import STAGES, StageForward
from .trainer import CheckpointRecord, StageRun, StageSettings, evaluate_stage, train_one_epoch, train_stage
