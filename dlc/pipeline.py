"""``DLCPipeline``: the DiT with its VAE, scheduler, and (when trained) encoder, code prior and text model.

    pipe = DLCPipeline.from_pretrained("runs/demo")      # a saved pipeline, a hub repo id, a project root or a DiT run
    pipe.sampling                                        # how it samples by default: the runs' ``sample:`` settings
    out = pipe(codes=codes, generator=torch.Generator().manual_seed(0))
    out = pipe(codes=codes, guidance_scale=3.0)          # one setting overridden for this call
    out.images, out.codes                                # PIL images and the (B, L) codes they were drawn from
    out = pipe(image=[img])                              # encode, then regenerate
    out = pipe(num_images=16)                            # codes from the prior
    out = pipe(prompt=["red apple"])                     # codes from the text model
    out = pipe(compose=[img_a, img_b], num_images=8)     # codes mixing the sources' tokens

diffusers' conventions: ``generator`` (one, or a list with one per image), ``prompt``, ``image``,
``output_type`` ("pil", "np" float NHWC in [0, 1], "pt" float NCHW in [0, 1], or "uint8" NCHW
tensors), ``return_dict=True`` (else a tuple ``(images, codes)``), and a progress bar over the
denoising steps. Sample i depends only on its own seed: with one generator, on (its seed,
start_index + i), never on ``batch_size`` or the number of processes; with a list, on the i-th
generator's seed alone. (The generators' seeds are read, not their state: the same generator gives
the same images every call.) The codes drawn by the prior, the text model or composition come
from the stream of ``code_seed(seed)``, the DiT's noise from that of ``seed``.

Sampling settings are data: ``pipe.sampling`` (a ``Sampling``: the DiT's sampler, steps, guidance
scale, interval and channels; the prior's steps, temperature, eta and remasking window; the text
model's steps, temperature, remasking and guidance; composition) is saved with the pipeline
(``model_index.json``), read by ``from_runs`` from each run's ``sample:`` section of config.yaml,
and used by every call; each ``__call__`` keyword left at None means "the saved setting".

``from_pretrained`` accepts four layouts:
- a folder written by ``save_pretrained`` (``model_index.json``), or a hub repo id of one (a
  snapshot download, as diffusers does);
- a project root with ``dit/`` and optionally ``encoder/``, ``prior/``, ``text/`` run directories
  (what ``dlc demo`` and the train scripts write);
- a single DiT run directory (``config.yaml`` + ``model/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.utils import BaseOutput
from PIL import Image

from .config import load_config, plain
from .data import pil_to_tensor, resize_center_crop, to_rgb, to_uint8
from .dit import DiT, DiTRunConfig, get_objective, sample
from .errors import CheckpointError, CodeError, DLCError
from .imageio import to_pil
from .prior import load_prior
from .runs import RunDir, is_run, local_folder, model_folder
from .seeding import Seed, sample_seed, seed_slice
from .text import HFTextToCode, load_text_model
from .text.hf import HF_META

OUTPUT_TYPES = ("pil", "np", "pt", "uint8")


def code_seed(seed: Seed) -> Seed:
    """The seed of the codes a call draws (prior, text, composition): a stream apart from the noise."""
    return sample_seed(seed, -1) if isinstance(seed, int) else [sample_seed(s, -1) for s in seed]


def sample_keys(generator, start_index: int, num: int) -> tuple[Seed, list[int]]:
    """(seed or per-sample seeds, sample indices) of ``num`` samples for a call's ``generator``:
    None (seed 0) or one ``torch.Generator`` -> its seed and indices ``start_index ..``; a list of
    ``num`` generators -> their seeds, each with index 0."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != num:
            raise DLCError(f"a list of generators needs one per image: got {len(generator)} for {num} images")
        return [g.initial_seed() for g in generator], [0] * num
    seed = 0 if generator is None else generator.initial_seed()
    return seed, list(range(start_index, start_index + num))


@dataclass
class DiTSampling:
    """How the DiT draws images from codes (``dlc.dit.diffusion.sample``)."""

    sampler: str | None = None  # None: the pipeline's scheduler (its objective's default sampler)
    steps: int = 50
    guidance_scale: float = 1.0  # 1: no classifier-free guidance
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # noise levels (0 clean, 1 noise) where guidance applies
    guidance_channels: int | None = None  # None: all channels; 3 as in DiT's paper


@dataclass
class PriorSampling:
    """How the prior draws codes (``dlc.prior.sample_codes``)."""

    steps: int = 128
    temperature: float = 1.0
    eta: float = 0.0  # > 0: the paper's remasking corrector inside ``window``
    window: tuple[float, float] = (0.3, 0.55)


@dataclass
class TextSampling:
    """How the text model draws codes from a prompt (``TextToCode.generate``)."""

    steps: int | None = None  # None: the code length (one token per step)
    temperature: float = 0.2
    remasking: str = "low_confidence"
    guidance_scale: float = 0.0


@dataclass
class Composition:
    """How ``compose`` mixes the sources' tokens (``dlc.compose``)."""

    method: str = "random"
    tau: float = 1e-3


@dataclass
class Sampling:
    """Every stage's sampling settings: what a call uses for what it is not told."""

    dit: DiTSampling = field(default_factory=DiTSampling)
    prior: PriorSampling = field(default_factory=PriorSampling)
    text: TextSampling = field(default_factory=TextSampling)
    composition: Composition = field(default_factory=Composition)

    @classmethod
    def from_dict(cls, data: dict | None) -> Sampling:
        """From ``to_dict``'s form (or a run's ``sample:`` sections): unknown keys (``num``,
        ``prompts``) are ignored, missing ones take the defaults."""
        data = data or {}
        return cls(**{f.name: _from_dict(f.default_factory, data.get(f.name)) for f in fields(cls)})

    def to_dict(self) -> dict:
        """JSON-ready (tuples as lists), as saved in model_index.json and settings.json."""
        return plain(asdict(self))

    def updated(self, **stages) -> Sampling:
        """A copy with each stage given as a dataclass (replaced whole) or a dict (only the fields it
        names; None values skipped) or None (kept)."""
        out = {}
        for name, given in stages.items():
            saved = getattr(self, name)
            if isinstance(given, dict):
                given = replace(saved, **_tuples({k: v for k, v in given.items() if v is not None}))
            out[name] = saved if given is None else given
        return replace(self, **out)


def _from_dict(kind, data: dict | None):
    names = {f.name for f in fields(kind)}
    return kind(**_tuples({k: v for k, v in (data or {}).items() if k in names}))


def _tuples(values: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


@dataclass
class DLCPipelineOutput(BaseOutput):
    images: list | np.ndarray | torch.Tensor
    codes: torch.Tensor | None


class DLCPipeline(DiffusionPipeline):
    """See the module docstring. ``objective`` ("flow" or "ddpm") is how the DiT was trained."""

    model_cpu_offload_seq = "encoder->prior->text_model->dit->vae"
    _optional_components = ["vae", "encoder", "prior", "text_model"]

    def __init__(self, dit, scheduler, vae=None, encoder=None, prior=None, text_model=None, objective: str = "flow",
                 sampling: dict | Sampling | None = None):
        super().__init__()
        self.register_modules(dit=dit, scheduler=scheduler, vae=vae, encoder=encoder, prior=prior,
                              text_model=text_model)
        sampling = sampling if isinstance(sampling, Sampling) else Sampling.from_dict(sampling)
        self.register_to_config(objective=objective, sampling=sampling.to_dict())
        self._check_parts()

    @property
    def sampling(self) -> Sampling:
        """The saved sampling settings (change them with ``set_sampling``)."""
        return Sampling.from_dict(self.config.sampling)

    def set_sampling(self, **stages) -> None:
        """Change the saved settings, e.g. ``set_sampling(prior={"steps": 64})`` (see ``Sampling.updated``)."""
        self.register_to_config(sampling=self.sampling.updated(**stages).to_dict())

    # ---- loading and saving --------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path, torch_dtype: torch.dtype | None = None, trust_remote_code: bool = False,
                        **kwargs) -> DLCPipeline:
        """A saved pipeline (a folder or a hub repo id), a project root or a DiT run directory (see
        the module docstring), its weights in ``torch_dtype`` (default float32). Nothing in the
        folder decides what code runs: a text model that needs its own Python code (LLaDA) loads only
        with ``trust_remote_code=True`` from the caller."""
        root = Path(path) if Path(path).exists() else local_folder(path)  # else a hub repo id
        if (root / "model_index.json").is_file():
            text = root / "text_model"
            if "text_model" not in kwargs and (text / HF_META).is_file():
                kwargs["text_model"] = load_text_model(text, trust_remote_code, torch_dtype=torch_dtype)
            return super().from_pretrained(root, torch_dtype=torch_dtype, **kwargs)
        project = is_run(root / "dit")  # else a single DiT run directory
        if project or is_run(root):
            parts = {name: root / sub for name, sub in (("encoder", "encoder"), ("prior", "prior"), ("text_model", "text"))
                     if project and model_folder(root / sub) != root / sub}
            pipe = cls.from_runs(root / "dit" if project else root, **parts, trust_remote_code=trust_remote_code, **kwargs)
            return pipe.to(dtype=torch_dtype) if torch_dtype is not None else pipe
        if root.exists() and not root.is_dir():
            raise CheckpointError(f"{root} is a file; a DLC pipeline is a folder")
        raise CheckpointError(
            f"{root} is not a DLC pipeline: expected a folder written by save_pretrained (model_index.json), a "
            "project root with a dit/ run (and optionally encoder/, prior/, text/), or a DiT run directory "
            "(config.yaml and model/)")

    @classmethod
    def from_runs(cls, dit_run, encoder=None, prior=None, text_model=None, sampler: str | None = None,
                  trust_remote_code: bool = False, **kwargs) -> DLCPipeline:
        """A pipeline from run directories (or model folders); the scheduler is the DiT run's sampler
        (or ``sampler``), the VAE the one it was trained in, the sampling settings each run's
        ``sample:`` section."""
        from .encoder import DLCEncoder  # timm: imported only when a pipeline is loaded

        dit_run = Path(dit_run)
        config = load_config(DiTRunConfig, dit_run / "config.yaml")
        objective = get_objective(config.objective)
        vae = AutoencoderKL.from_pretrained(config.latent) if config.latent != "pixel" else None
        if encoder is None and config.condition.kind == "encoder":
            encoder = config.condition.encoder
        runs = {"dit": dit_run, "prior": prior, "text": text_model}
        # each run's ``sample:`` section (none in a bare model folder)
        sampling = Sampling.from_dict({name: RunDir(run).saved_config().get("sample") or {}
                                       for name, run in runs.items() if run is not None})
        if sampler:
            sampling = sampling.updated(dit={"sampler": sampler})
        return cls(
            dit=DiT.from_pretrained(dit_run).eval(),
            scheduler=objective.make_scheduler(sampler or config.sample.sampler or objective.default_sampler),
            vae=vae,
            encoder=DLCEncoder.from_pretrained(encoder).eval() if encoder is not None else None,
            prior=load_prior(prior) if prior is not None else None,
            text_model=load_text_model(text_model, trust_remote_code).eval() if text_model is not None else None,
            objective=config.objective,
            **{"sampling": sampling, **kwargs},
        )

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """diffusers' layout; a Hugging Face text model (not a diffusers model) is saved beside it."""
        text_model = self.text_model
        hf_text = isinstance(text_model, HFTextToCode)
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
            config = getattr(getattr(self, name, None), "config", None)  # every part's config states L and V
            got = (config.code_length, config.vocab_size) if hasattr(config, "code_length") else None
            if got is not None and got != want:
                raise DLCError(f"the {name} makes codes of length {got[0]} over {got[1]} values, but the DiT reads "
                               f"length {want[0]} over {want[1]} values: they come from different encoders")

    # ---- the call ------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, codes: torch.Tensor | None = None, image=None, prompt: Sequence[str] | str | None = None,
                 compose: Sequence | None = None, num_images: int | None = None, *, num_images_per_prompt: int = 1,
                 guidance_scale: float | None = None, num_inference_steps: int | None = None, generator=None,
                 scheduler: str | None = None, guidance_channels: int | None = None,
                 guidance_interval: tuple[float, float] | None = None, prior_sampling: PriorSampling | dict | None = None,
                 text_sampling: TextSampling | dict | None = None, composition: Composition | dict | None = None,
                 start_index: int = 0, batch_size: int = 16, output_type: str = "pil", return_dict: bool = True):
        """Generate images. Exactly one code source: ``codes`` ((B, L) long or soft (B, L, V)),
        ``image`` (encoded), ``prompt`` (the text model), ``compose`` (images or codes to mix), or
        none (the prior draws ``num_images`` codes; an unconditional DiT needs no codes).

        Every sampling keyword left at None takes the pipeline's saved setting (``self.sampling``):
        ``guidance_scale``, ``num_inference_steps``, ``scheduler`` (a sampler name: flow: euler,
        heun, dpm; ddpm: ddpm, ddim, dpm), ``guidance_channels`` (guide only the first k channels;
        0: all), ``guidance_interval`` (noise levels, 0 clean, 1 noise, where guidance applies);
        ``prior_sampling``, ``text_sampling``, ``composition``: a settings object (replaces the
        saved one) or a dict of the fields to change. ``start_index``: the index of the first
        sample (to redraw part of a run).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}; got {output_type!r}")
        settings = self.resolve_sampling(
            dit={"sampler": scheduler, "steps": num_inference_steps, "guidance_scale": guidance_scale,
                 "guidance_interval": guidance_interval, "guidance_channels": guidance_channels},
            prior=prior_sampling, text=text_sampling, composition=composition)
        image, prompt = _listed(image, prompt)
        total = self._count(codes, image, prompt, compose, num_images, num_images_per_prompt)
        seed, indices = sample_keys(generator, start_index, total)
        codes = self.make_codes(codes, image, prompt, compose, total, seed=code_seed(seed), indices=indices,
                                num_images_per_prompt=num_images_per_prompt, prior_sampling=settings.prior,
                                text_sampling=settings.text, composition=settings.composition)
        pixels = []
        starts = range(0, total, batch_size)
        with self.progress_bar(total=len(starts) * settings.dit.steps) as bar:
            for start in starts:
                stop = min(total, start + batch_size)
                batch = codes[start:stop].to(self.device) if codes is not None else None
                latents = self.denoise(batch, stop - start, seed_slice(seed, start, stop), indices[start:stop],
                                       settings.dit, on_step=bar.update)
                pixels.append(self.decode(latents).cpu())
        images = _convert(torch.cat(pixels), output_type)
        return DLCPipelineOutput(images=images, codes=codes) if return_dict else (images, codes)

    def resolve_sampling(self, **stages) -> Sampling:
        """The settings a call uses: the saved ones, updated with the call's (see ``Sampling.updated``);
        ``guidance_channels=0`` means all channels."""
        settings = self.sampling.updated(**stages)
        if settings.dit.guidance_channels == 0:
            settings = replace(settings, dit=replace(settings.dit, guidance_channels=None))
        return settings

    def denoise(self, codes: torch.Tensor | None, num: int, seed: Seed, indices: Sequence[int], dit: DiTSampling,
                on_step=None) -> torch.Tensor:
        """Model-space samples (N, C, H, W) of ``num`` images from their codes, drawn as ``dit`` says."""
        objective = get_objective(self.config.objective)
        scheduler = self.scheduler if dit.sampler is None else objective.make_scheduler(dit.sampler)
        return sample(self.dit, objective, codes, num=num, seed=seed, indices=list(indices), steps=dit.steps,
                      sampler=scheduler, guidance_scale=dit.guidance_scale, guidance_channels=dit.guidance_channels,
                      guidance_interval=tuple(dit.guidance_interval), on_step=on_step)

    def _count(self, codes, image, prompt, compose, num_images, per_prompt: int) -> int:
        """How many images a call makes, from its one code source (``image`` and ``prompt`` as lists)."""
        given = [name for name, value in (("codes", codes), ("image", image), ("prompt", prompt),
                                          ("compose", compose)) if value is not None]
        if len(given) > 1:
            raise DLCError(f"give one code source, not {' and '.join(given)}")
        if codes is not None:
            codes = torch.as_tensor(codes)
            total = 1 if codes.ndim == (2 if codes.is_floating_point() else 1) else len(codes)
        elif image is not None:
            total = 1 if isinstance(image, torch.Tensor) and image.ndim == 3 else len(image)
        elif prompt is not None:
            total = len(prompt) * per_prompt
        else:
            total = num_images or (8 if compose is not None else None)
        if not total or total < 1:
            source = given[0] if given else "num_images"  # (compose draws 8 unless told)
            raise DLCError(f"nothing to generate: {source} holds no sample; give codes, image, prompt, compose "
                           "sources or num_images >= 1")
        return total

    def make_codes(self, codes=None, image=None, prompt=None, compose=None, num_images: int = 1, *,
                   seed: Seed = 0, indices: Sequence[int] | None = None, num_images_per_prompt: int = 1,
                   prior_sampling: PriorSampling | None = None, text_sampling: TextSampling | None = None,
                   composition: Composition | None = None) -> torch.Tensor | None:
        """The codes of a call's ``num_images`` samples (None for an unconditional DiT); drawn codes
        depend only on (seed, indices[i])."""
        indices = list(range(num_images)) if indices is None else list(indices)
        image, prompt = _listed(image, prompt)
        if codes is not None:
            return self._checked(torch.as_tensor(codes))
        if image is not None:
            return self._part("encoder", "images").encode(self.encoder_input(image)).cpu()
        if prompt is not None:
            text = asdict(text_sampling or self.sampling.text)  # TextSampling's fields are generate's options
            return self._part("text_model", "prompts").generate(
                list(prompt), num_per_prompt=num_images_per_prompt, seed=seed, indices=indices, **text).cpu()
        if compose is not None:
            return self._composed(compose, seed, indices, composition or self.sampling.composition)
        if self.dit.code_embedder is None:
            return None
        prior = asdict(prior_sampling or self.sampling.prior)  # PriorSampling's fields are the samplers' options
        return self._part("prior", "num_images").sample(num_images, seed=seed, indices=indices, **prior).cpu()

    def _composed(self, sources: Sequence, seed: Seed, indices: list[int], composition: Composition):
        from .compose import compose, encode_sources

        if len(sources) < 2:
            raise DLCError(f"composition needs two or more sources; got {len(sources)}")
        items = []
        for source in sources:
            is_code = isinstance(source, torch.Tensor) and not source.is_floating_point() and source.ndim == 1
            items += [source] if is_code else encode_sources(self.encoder_input([source]),
                                                             self._part("encoder", "compose images"))
        table = self.dit.code_embedder
        composed = compose(items, n=len(indices), seed=seed, method=composition.method, tau=composition.tau,
                           vocab_size=table.vocab_size if table is not None else None, indices=indices)
        return self._checked(composed)

    def encoder_input(self, images) -> torch.Tensor:
        """PIL images, or uint8 / [-1, 1] float tensors (B, C, H, W) -> uint8 at the encoder's input size."""
        encoder = self._part("encoder", "images")
        size = encoder.config.input_size or encoder.config.image_size
        if isinstance(images, torch.Tensor):
            images = list(images)
        tensors = []
        for image in images:
            if isinstance(image, torch.Tensor):
                image = to_pil(image if image.dtype == torch.uint8 else to_uint8(image.float()))
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


def _listed(image, prompt):
    """A single PIL image or prompt as a list of one (tensors and lists stay as they are)."""
    return ([image] if isinstance(image, Image.Image) else image), ([prompt] if isinstance(prompt, str) else prompt)


def _convert(images: torch.Tensor, output_type: str):
    """Images in [-1, 1] (B, C, H, W) -> the requested output type."""
    if output_type == "uint8":
        return to_uint8(images)
    if output_type == "pt":
        return (images + 1) / 2
    if output_type == "np":
        return ((images + 1) / 2).permute(0, 2, 3, 1).numpy()
    return [to_pil(image) for image in to_uint8(images)]

