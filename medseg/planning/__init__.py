"""Planning: measure a dataset (fingerprint), then choose a pipeline for it (nnU-Net's heuristics).

fingerprint = compute_fingerprint(cases, modality="CT", channel_names=["CT"], labels={1: "liver"})
pipeline, comments = plan_pipeline(fingerprint, name="liver", memory_gb=8)
save_pipeline(pipeline, "liver.yaml", comments=comments)

For a CPU, the network and patch also fit a training step's time (see :mod:`medseg.planning.compute`):

pipeline, comments = plan_pipeline(fingerprint, name="liver", memory_gb=2, device="cpu", cpu_threads=2)
"""

from medseg.planning.compute import estimate_step_seconds, forward_macs, pipeline_step_seconds
from medseg.planning.dataset import Plan, fingerprint_path, plan_dataset
from medseg.planning.fingerprint import ChannelStats, Fingerprint, compute_fingerprint
from medseg.planning.memory import estimate_memory_gb, pipeline_memory_gb
from medseg.planning.planner import plan_pipeline
from medseg.planning.topology import Topology, check_patch, plan_topology

__all__ = [
    "ChannelStats",
    "Fingerprint",
    "Plan",
    "Topology",
    "check_patch",
    "compute_fingerprint",
    "estimate_memory_gb",
    "estimate_step_seconds",
    "fingerprint_path",
    "forward_macs",
    "pipeline_memory_gb",
    "pipeline_step_seconds",
    "plan_dataset",
    "plan_pipeline",
    "plan_topology",
]
