"""Converters from the authors' released DLC checkpoints (lavoiems/DiscreteLatentCode) to this
library's models, writing a folder ``DLCPipeline.from_pretrained`` loads (``dlc convert``).

    dit_pipeline("DLC_DiT_L512", "dlc512", vae="sd-vae-ft-ema")    # creates the pipeline folder
    add_encoder("SEM_dinov2_L512/teacher_checkpoint.pth", "dlc512") # adds a part to it

Each converter reads every size from the checkpoint and checks every key and shape (``common``).
"""

from .dit import convert_dit, dit_pipeline
from .encoder import add_encoder, convert_encoder
from .prior import add_prior, convert_prior
from .text import add_text

__all__ = ["add_encoder", "add_prior", "add_text", "convert_dit", "convert_encoder", "convert_prior", "dit_pipeline"]
