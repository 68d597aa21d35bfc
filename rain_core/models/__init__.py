"""The networks of RAIN: one file per architecture, shared attention pieces in `attention`."""

from rain_core.models.attention import ReferenceAttnProcessor, ReferenceKV
from rain_core.models.context import LearnedContext
from rain_core.models.denoising_unet import DenoisingUNet, DenoisingUNetOutput
from rain_core.models.embeddings import guidance_scale_embedding
from rain_core.models.motion_module import MotionModule
from rain_core.models.pose_guider import PoseGuider
from rain_core.models.reference_net import ReferenceUNet
from rain_core.models.taesdv import TAESDV

__all__ = [
    "DenoisingUNet",
    "DenoisingUNetOutput",
    "LearnedContext",
    "MotionModule",
    "PoseGuider",
    "ReferenceAttnProcessor",
    "ReferenceKV",
    "ReferenceUNet",
    "TAESDV",
    "guidance_scale_embedding",
]
