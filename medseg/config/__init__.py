"""Pipeline configuration: the schema and its YAML form."""

from medseg.config.loading import dump_pipeline, load_pipeline, parse_pipeline, save_pipeline
from medseg.config.schema import (
    Augmentation,
    Channel,
    Inference,
    Label,
    Network,
    Normalization,
    Optimizer,
    Pipeline,
    Postprocessing,
    Preprocessing,
    Training,
)

__all__ = [
    "Augmentation",
    "Channel",
    "Inference",
    "Label",
    "Network",
    "Normalization",
    "Optimizer",
    "Pipeline",
    "Postprocessing",
    "Preprocessing",
    "Training",
    "dump_pipeline",
    "load_pipeline",
    "parse_pipeline",
    "save_pipeline",
]
