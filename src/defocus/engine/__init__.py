"""Training engine: stage 1 (DFFNet), stage 2 (D-DFFNet depth feature distillation) and R-DFFNet (method.md §3-§5).

    from defocus.config import load_config
    from defocus.engine import train
    result = train(load_config("configs/smoke_stage1.yaml", ["output_dir=runs/smoke"]))
    model = defocus.load_model(result.model_path)
"""
from .trainer import NonFiniteLossError, TeacherInterrupted, Trainer, TrainResult, train

__all__ = ["Trainer", "TrainResult", "NonFiniteLossError", "TeacherInterrupted", "train"]
