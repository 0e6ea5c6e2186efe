"""``DLCPipeline``: the DiT with its VAE, scheduler, and (when trained) encoder, code prior and text model.

    pipe = DLCPipeline.from_pretrained("runs/demo")        # a project root, a DiT run, or a saved pipeline
    images = pipe(codes=codes, guidance_scale=1.4, seed=0)  # (B, L) long or soft (B, L, V)
    images = pipe(images=[img], seed=0)                     # encode, then regenerate
    images = pipe(num_images=16, seed=0)                    # codes from the prior
    images = pipe(prompts=["red apple"], seed=0)            # codes from the text model
    images = pipe(compose=[img_a, img_b], num_images=8)     # codes mixing the sources' tokens
    out = pipe(num_images=4, return_dict=True)              # out.images, out.codes

Every call returns a list of PIL images by default (``output_type``: "pil", "np" float NHWC in
[0, 1], "pt" float NCHW in [0, 1], or "uint8" NCHW tensors). Sample i of a call depends only on
(seed, start_index + i), never on ``batch_size``: the codes drawn by the prior, the text model or
composition come from the stream of ``code_seed(seed)``, the DiT's noise from that of ``seed``.

``from_pretrained`` accepts three layouts:
- a folder written by ``save_pretrained`` (``model_index.json``; loads on any machine, and from the
  hub like any diffusers pipeline);
- a project root with ``dit/`` and optionally ``encoder/``, ``prior/``, ``text/`` run directories
  (what ``dlc demo`` and the train scripts write);
- a single DiT run directory (``config.yaml`` + ``model/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from PIL import Image

from .data import pil_to_tensor, resize_center_crop, to_rgb, to_uint8
from .diffusion import get_objective, sample
from .errors import CheckpointError, CodeError, DLCError
from .seeding import sample_seed

OUTPUT_TYPES = ("pil", "np", "pt", "uint8")


def code_seed(seed: int) -> int:
    """The seed of the codes a call draws (prior, text, composition): a stream apart from the noise."""
    return sample_seed(seed, -1)


@dataclass
class DLCPipelineOutput(BaseOutput):
    images: list | np.ndarray | torch.Tensor
    codes: torch.Tensor | None


class DLCPipeline(DiffusionPipeline):
    """See the module docstring. ``objective`` ("flow" or "ddpm") is how the DiT was trained."""

    model_cpu_offload_seq = "encoder->prior->text_model->dit->vae"
    _optional_components = ["vae", "encoder", "prior", "text_model"]

    def __init__(self, dit, scheduler, vae=None, encoder=None, prior=None, text_model=None, objective: str = "flow"):
        super().__init__()
        self.register_modules(dit=dit, scheduler=scheduler, vae=vae, encoder=encoder, prior=prior,
                              text_model=text_model)
        self.register_to_config(objective=objective)
        self._check_parts()

    # ---- loading and saving --------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> DLCPipeline:
        """A saved pipeline, a project root or a DiT run directory (see the module docstring)."""
        root = Path(path)
        if (root / "model_index.json").is_file():
            text = root / "text_model"
            if "text_model" not in kwargs and _is_hf_text_model(text):
                from .text import load_text_model

                kwargs["text_model"] = load_text_model(text)
            return super().from_pretrained(path, **kwargs)
        if _is_run(root / "dit"):
            parts = {name: root / sub for name, sub in (("encoder", "encoder"), ("prior", "prior"), ("text_model", "text"))
                     if (root / sub / "model" / "config.json").is_file() or _is_hf_text_model(root / sub / "model")}
            return cls.from_runs(root / "dit", **parts, **kwargs)
        if _is_run(root):
            return cls.from_runs(root, **kwargs)
        if root.exists() and not root.is_dir():
            raise CheckpointError(f"{root} is a file; a DLC pipeline is a folder")
        raise CheckpointError(
            f"{root} is not a DLC pipeline: expected a folder written by save_pretrained (model_index.json), a "
            "project root with a dit/ run (and optionally encoder/, prior/, text/), or a DiT run directory "
            "(config.yaml and model/)")

    @classmethod
    def from_runs(cls, dit_run, encoder=None, prior=None, text_model=None, sampler: str | None = None,
                  **kwargs) -> DLCPipeline:
        """A pipeline from run directories (or model folders); the scheduler is the DiT run's sampler
        (or ``sampler``), the VAE the one it was trained in."""
        from .config import load_config
        from .dit import DiT
        from .dit_training import DiTRunConfig
        from .encoder import DLCEncoder
        from .prior import load_prior
        from .text import load_text_model

        dit_run = Path(dit_run)
        config = load_config(DiTRunConfig, dit_run / "config.yaml")
        objective = get_objective(config.objective)
        vae = None
        if config.latent != "pixel":
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(config.latent)
        if encoder is None and config.condition.kind == "encoder":
            encoder = config.condition.encoder
        return cls(
            dit=DiT.from_pretrained(_model_folder(dit_run)).eval(),
            scheduler=objective.make_scheduler(sampler or config.sample.sampler or objective.default_sampler),
            vae=vae,
            encoder=DLCEncoder.from_pretrained(encoder).eval() if encoder is not None else None,
            prior=load_prior(prior) if prior is not None else None,
            text_model=load_text_model(text_model).eval() if text_model is not None else None,
            objective=config.objective,
            **kwargs,
        )

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """diffusers' layout; a Hugging Face text model (not a diffusers model) is saved beside it."""
        text_model = self.text_model
        hf_text = text_model is not None and not hasattr(text_model, "config")
        if hf_text:
            self.text_model = None
        try:
            super().save_pretrained(save_directory, **kwargs)
        finally:
            self.text_model = text_model
        if hf_text:
            text_model.save_pretrained(Path(save_directory) / "text_model")

    def _check_parts(self) -> None:
        """Every part that makes codes must make codes the DiT reads: same L and V."""
        table = self.dit.code_embedder
        if table is None:
            return
        want = (table.code_length, table.vocab_size)
        for name in ("encoder", "prior", "text_model"):
            part = getattr(self, name, None)
            got = _code_shape(part) if part is not None else None
            if got is not None and got != want:
                raise DLCError(f"the {name} makes codes of length {got[0]} over {got[1]} values, but the DiT reads "
                               f"length {want[0]} over {want[1]} values: they come from different encoders")

    # ---- the call ------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor | None = None, images=None, num_images: int | None = None,
                 prompts: Sequence[str] | str | None = None, compose: Sequence | None = None, *,
                 guidance_scale: float = 1.4, num_inference_steps: int = 50, seed: int = 0, start_index: int = 0,
                 batch_size: int = 16, scheduler: str | None = None, guidance_channels: int | None = None,
                 guidance_interval: tuple[float, float] = (0.0, 1.0), num_images_per_prompt: int = 1,
                 prior_steps: int = 128, prior_temperature: float = 1.0, prior_eta: float = 0.0,
                 text_steps: int | None = None, text_temperature: float = 0.2, text_remasking: str = "low_confidence",
                 compose_method: str = "random", compose_tau: float = 1e-3, output_type: str = "pil",
                 return_dict: bool = False):
        """Generate images. Exactly one code source: ``codes``, ``images``, ``prompts``, ``compose``,
        or none (the prior draws ``num_images`` codes; an unconditional DiT needs no codes).

        ``scheduler``: a sampler name for this call (flow: euler, heun, dpm; ddpm: ddpm, ddim, dpm)
        instead of the pipeline's scheduler. ``guidance_channels``: guide only the first k
        channels (3 as DiT's paper; default all). ``guidance_interval``: noise levels (0 clean,
        1 noise) where guidance applies. ``prior_*``, ``text_*``, ``compose_*``: how codes are drawn.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}")
        codes = self.make_codes(codes, images, num_images, prompts, compose, seed=seed, start_index=start_index,
                                num_images_per_prompt=num_images_per_prompt, prior_steps=prior_steps,
                                prior_temperature=prior_temperature, prior_eta=prior_eta, text_steps=text_steps,
                                text_temperature=text_temperature, text_remasking=text_remasking,
                                compose_method=compose_method, compose_tau=compose_tau)
        total = len(codes) if codes is not None else num_images
        if not total:
            raise DLCError("nothing to generate: give codes, images, prompts, compose sources or num_images >= 1")
        sampler = self.scheduler if scheduler is None else get_objective(self.config.objective).make_scheduler(scheduler)
        pixels = []
        for start in self.progress_bar(range(0, total, batch_size)):
            stop = min(total, start + batch_size)
            batch_codes = codes[start:stop].to(self.device) if codes is not None else None
            latents = sample(self.dit, get_objective(self.config.objective), batch_codes, num=stop - start, seed=seed,
                             indices=range(start_index + start, start_index + stop), steps=num_inference_steps,
                             sampler=sampler, guidance_scale=guidance_scale, guidance_channels=guidance_channels,
                             guidance_interval=guidance_interval)
            pixels.append(self.decode(latents).cpu())
        out = _convert(torch.cat(pixels), output_type)
        return DLCPipelineOutput(images=out, codes=codes) if return_dict else out

    def make_codes(self, codes=None, images=None, num_images=None, prompts=None, compose=None, *, seed: int = 0,
                   start_index: int = 0, num_images_per_prompt: int = 1, prior_steps: int = 128,
                   prior_temperature: float = 1.0, prior_eta: float = 0.0, text_steps: int | None = None,
                   text_temperature: float = 0.2, text_remasking: str = "low_confidence",
                   compose_method: str = "random", compose_tau: float = 1e-3) -> torch.Tensor | None:
        """The codes a call generates from (None for an unconditional DiT)."""
        given = [name for name, value in (("codes", codes), ("images", images), ("prompts", prompts),
                                          ("compose", compose)) if value is not None]
        if len(given) > 1:
            raise DLCError(f"give one code source, not {' and '.join(given)}")
        if codes is not None:
            return self._checked(torch.as_tensor(codes))
        if images is not None:
            return self._part("encoder", "images").encode(self.encoder_input(images)).cpu()
        seed = code_seed(seed)
        if prompts is not None:
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            rows = len(prompts) * num_images_per_prompt
            return self._part("text_model", "prompts").generate(
                prompts, num_per_prompt=num_images_per_prompt, seed=seed, steps=text_steps,
                temperature=text_temperature, remasking=text_remasking,
                indices=range(start_index, start_index + rows)).cpu()
        if compose is not None:
            return self._composed(compose, num_images or 8, seed, start_index, compose_method, compose_tau)
        if self.dit.code_embedder is None:
            return None
        if not num_images:
            raise DLCError("give num_images (codes drawn by the prior) or codes, images, prompts or compose")
        return self._part("prior", "num_images").sample(num_images, seed=seed, steps=prior_steps,
                                                        temperature=prior_temperature, eta=prior_eta,
                                                        start_index=start_index).cpu()

    def _composed(self, sources: Sequence, n: int, seed: int, start_index: int, method: str, tau: float):
        from .compose import compose, encode_sources

        if len(sources) < 2:
            raise DLCError(f"composition needs two or more sources; got {len(sources)}")
        items = []
        for source in sources:
            is_code = isinstance(source, torch.Tensor) and not source.is_floating_point() and source.ndim == 1
            items += [source] if is_code else encode_sources(self.encoder_input([source]),
                                                             self._part("encoder", "compose images"))
        table = self.dit.code_embedder
        composed = compose(items, n=start_index + n, seed=seed, method=method, tau=tau,
                           vocab_size=table.vocab_size if table is not None else None)
        return self._checked(composed[start_index:])

    def encoder_input(self, images) -> torch.Tensor:
        """PIL images, or uint8 / [-1, 1] float tensors (B, C, H, W) -> uint8 at the encoder's input size."""
        encoder = self._part("encoder", "images")
        size = encoder.config.input_size or encoder.config.image_size
        if isinstance(images, torch.Tensor):
            images = list(images)
        tensors = []
        for image in images:
            if isinstance(image, torch.Tensor):
                array = (image if image.dtype == torch.uint8 else to_uint8(image.float())).permute(1, 2, 0).cpu().numpy()
                image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
            elif not isinstance(image, Image.Image):
                raise DLCError(f"images must be PIL images or (C, H, W) tensors; got {type(image).__name__}")
            image = resize_center_crop(to_rgb(image), size)
            if encoder.config.in_channels == 1:
                image = image.convert("L")
            tensors.append(pil_to_tensor(image))
        return torch.stack(tensors).to(self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space samples -> images in [-1, 1]."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        scale = self.vae.config.scaling_factor
        return self.vae.decode(latents.to(self.vae.dtype) / scale).sample.float().clamp(-1, 1)

    def _part(self, name: str, needed_for: str):
        part = getattr(self, name, None)
        if part is None:
            raise DLCError(f"this pipeline has no {name.replace('_', ' ')}, which {needed_for} need; load a project "
                           f"root that has one or pass {name}=... to DLCPipeline")
        return part

    def _checked(self, codes: torch.Tensor) -> torch.Tensor:
        table = self.dit.code_embedder
        if table is None:
            raise CodeError("this DiT is unconditional: it takes no codes")
        codes = codes.unsqueeze(0) if codes.ndim == (2 if codes.is_floating_point() else 1) else codes
        table.check(codes, len(codes))
        return codes.cpu()


def _convert(images: torch.Tensor, output_type: str):
    """Images in [-1, 1] (B, C, H, W) -> the requested output type."""
    if output_type == "uint8":
        return to_uint8(images)
    if output_type == "pt":
        return (images + 1) / 2
    if output_type == "np":
        return ((images + 1) / 2).permute(0, 2, 3, 1).numpy()
    arrays = to_uint8(images).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a) for a in arrays]


def _code_shape(part) -> tuple[int, int] | None:
    config = getattr(part, "config", None)
    if config is not None and hasattr(config, "code_length"):
        return config.code_length, config.vocab_size
    layout = getattr(part, "layout", None)
    return (layout.code_length, layout.code_vocab) if layout is not None else None


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "model" / "config.json").is_file()


def _model_folder(path: Path) -> Path:
    return path / "model" if (path / "model" / "config.json").is_file() else path


def _is_hf_text_model(path: Path) -> bool:
    from .text import HF_META

    return (path / HF_META).is_file()
