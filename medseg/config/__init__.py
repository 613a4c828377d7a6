"""Pipeline configuration: the schema and its YAML form."""

from medseg.config.loading import dump_pipeline, load_pipeline, parse_pipeline, save_pipeline
from medseg.config.schema import (
    Channel,
    Inference,
    Label,
    Network,
    Normalization,
    Optimizer,
    Pipeline,
    Postprocessing,
    Preprocessing,
    Step,
    Training,
    default_augmentation,
)

__all__ = [
    "Channel",
    "Inference",
    "Label",
    "Network",
    "Normalization",
    "Optimizer",
    "Pipeline",
    "Postprocessing",
    "Preprocessing",
    "Step",
    "Training",
    "default_augmentation",
    "dump_pipeline",
    "load_pipeline",
    "parse_pipeline",
    "save_pipeline",
]
