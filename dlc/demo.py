"""``dlc demo``: the whole pipeline on 32x32 images (the emoji by default; the glyphs, or any image
folder), stage by stage, ending in a report.

Stages (each a run directory under the demo root; a finished stage is reused on a re-run, an
interrupted training resumes from its last checkpoint):

    encoder  self-supervised SEM encoder            -> encoder/
    codes    the images encoded to codes            -> codes/{train,test}.npy
    vae      a small VAE: the DiT's latent space (32x32x3 -> 8x8x4) -> vae/
    dit      the DLC-conditioned DiT on its latents -> dit/
    prior+text  the masked-diffusion code prior and the text-to-code model, side by side (the
             prior alone for images without captions) -> prior/, text/
    table    --table only: the paper's conditioning table, an unconditional and a class-conditioned
             DiT trained exactly as the main one (the main DiT is the table's DLC rows), every row
             sampled without guidance and scored -> table/{none,class}/, fid/table-*/
    samples  reconstructions, prior samples, compositions, text-to-image -> report/*.png
    judge    glyphs only: compositions and prompts judged by the factor classifiers
    evaluate FID and KID of the main DiT -> fid/
    toy      the paper's toy experiment (Section 3): KL of 2-D diffusion models, unconditional
             vs conditioned on a mixture index, as ``dlc toy``  -> toy/
    report   report.html and report.md

Budgets are training steps, measured on 2 CPU cores; ``scale`` multiplies them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import torch

from . import config as configs
from . import data
from .codes import load_codes, save_codes
from .data.folder import split_folders
from .encoder.inception import FROZEN_BACKBONES
from .errors import DLCError
from .imageio import display_scale, pairs_grid, save_grid, save_image, save_pngs
from .report import Section, plot_losses, write_report
from .runs import RunDir
from .stages import STAGES
from .training import native_bf16


@dataclass
class Budget:
    encoder_steps: int = 400
    # measured (benchmarks/dit_curve.py, docs/demo.md): a 6-minute VAE and a DiT on its 8x8 latents
    # for the remaining 9 beat a pixel DiT-N/4 trained all 15 minutes
    vae_steps: int = 1500  # 0: the DiT works on pixels
    dit_steps: int = 3600  # measured on glyphs (docs/demo.md): 11 min in bf16, test glyphs drawn right 0.75 against 0.61 at 2,400
    dit_arch: str = "DiT-N/1"  # patch 1 on 8x8 latents: 64 tokens, as patch 4 on 32x32 pixels
    dit_minutes: float = 12.0  # the DiT stops here on a slower machine (0: no limit)
    prior_steps: int = 1200
    text_steps: int = 1500  # measured (docs/demo.md): 1,500 steps of the MiniLM reader beat 1,000
    sample_steps: int = 25  # DiT sampler steps for pictures and FID
    guidance: float = 3.0  # for pictures; the table uses no guidance, as the paper's ablation
    fid_samples: int = 128
    prior_sample_steps: int = 64
    toy_steps: int = 3000  # each toy model's; the demo's toy is `dlc toy` (the same settings and numbers)
    toy_ns: tuple[int, ...] = (9, 121, 400, 900)

    def scaled(self, scale: float, skip: tuple[str, ...] = ()) -> Budget:
        """Every training budget (steps, the DiT's minutes) times ``scale``, but those in ``skip``."""
        steps = {k: max(1, round(v * scale)) for k, v in asdict(self).items() if k.endswith("_steps")
                 and k not in ("sample_steps", "prior_sample_steps", *skip)}
        return replace(self, **steps, dit_minutes=self.dit_minutes * scale)

    def for_data(self, train_images: int) -> Budget:
        """The budgets for a training set of ``train_images``: measured on the 3,283 training emoji, kept
        for larger sets (the minutes are the limit), shrunk in proportion for smaller ones (fewer images
        are learned in fewer steps), to a quarter at the least. The toy experiment does not depend on it."""
        return self.scaled(min(1.0, max(0.25, train_images / EMOJI_TRAIN_IMAGES)), skip=("toy_steps",))


EMOJI_TRAIN_IMAGES = 3283  # the budgets above were measured on these
SIZE = 32  # the demo's image size, every dataset resized to it
OWN_PRESETS = ("emoji", "glyphs")  # datasets with presets of their own (dlc/configs/NAME/); others use emoji's
DATA_STAGES = ("encoder", "vae", "dit", "text")  # the stages that read images (the prior reads stored codes)
JUDGED_PARENTS = 8  # glyph compositions judged: parent pairs (8 samples each)
JUDGED_RECONSTRUCTIONS = 64  # glyph reconstructions judged: test images, drawn from their codes

QUICK = Budget(encoder_steps=20, vae_steps=20, dit_steps=30, prior_steps=30, text_steps=30,
               sample_steps=8, fid_samples=24, prior_sample_steps=16, toy_steps=20, toy_ns=(9, 16))

# seconds per training step measured on 2 idle CPU cores (AMD EPYC), for the time estimates shown;
# "1 thread": with the other model training beside it, final checks included
SECONDS_PER_STEP = {"encoder": 1.1, "encoder, frozen backbone": 0.37, "vae": 0.24, "DiT-T/4": 0.55, "DiT-N/4": 0.285, "DiT-N/1": 0.24,
                    "DiT-N/1 bf16": 0.18,  # glyphs' 2,386 steps in 7.1 min against 9.4 in fp32
                    "prior": 0.2, "text": 0.22,
                    "prior 1 thread": 0.31, "text 1 thread": 0.25,  # the MiniLM reader: 1,000 steps in 4.1 min
                    "toy": 0.0031}  # a toy model's step, sampling and scoring included, two side by side
SECONDS_PER_FID_IMAGE = 0.36  # sampling and Inception features


JUDGE_KID = "KID (judges)"  # glyphs: KID in the factor classifiers' features (dlc.eval.fidelity.kid_from_features)
SOURCE_ERROR = "MSE to test image i"  # the table's column: how much of its own held-out image a sample carries
PAIR_NAMES = ("original", "from code")  # the captions of a reconstruction pair


def held_out_split(dataset: str) -> str:
    """The split the demo evaluates on: "test", an image folder's val/ when it has no test/, or its
    training images when it has neither (the report says so)."""
    if not dataset.startswith("imagefolder:"):
        return "test"
    return next((s for s in ("test", "val") if s in split_folders(Path(dataset.split(":", 1)[1]))), "train")


class Demo:
    """The demo on ``dataset`` (emoji by default; glyphs, fashion-mnist or imagefolder:PATH): a
    dataset with its own presets (emoji, glyphs) uses them, any other the emoji presets with its
    data; prompts, held-out captions and augmentations come from the dataset (dlc/data/defaults.py)."""

    def __init__(self, out: str = "runs/demo", quick: bool = False, scale: float = 1.0, fresh: bool = False,
                 fid_samples: int | None = None, table: bool = False,
                 dataset: str = "emoji"):
        self.root = Path(out)
        self.dataset = data.canonical_name(dataset)
        self.train_set = data.in_memory(data.load(self.dataset, size=SIZE, split="train", channels=3))
        self.test_split = held_out_split(self.dataset)
        self.test_set = data.in_memory(data.load(self.dataset, size=SIZE, split=self.test_split, channels=3))
        self.defaults = data.dataset_defaults(self.dataset)
        self.preset = self.dataset if self.dataset in OWN_PRESETS else "emoji"
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.budget = (QUICK if quick else Budget()).scaled(scale).for_data(len(self.train_set))
        if fid_samples:
            self.budget = replace(self.budget, fid_samples=fid_samples)
        self.quick, self.table = quick, table
        self.state_path = self.root / "demo.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        self.figures = self.root / "report"
        self.figures.mkdir(exist_ok=True)
        self._pipelines = {}


    @property
    def noun(self) -> str:
        """What the report calls the images: emoji, glyphs, images."""
        return self.dataset if self.dataset in OWN_PRESETS else "images"

    @property
    def captioned(self) -> bool:
        return self.train_set.captions is not None

    @property
    def reference_name(self) -> str:
        """The held-out images, as the report names them."""
        held_out = {"train": "training", "val": "validation"}.get(self.test_split, self.test_split)
        return f"{len(self.test_set)} {held_out} {self.noun}"

    @property
    def labelled(self) -> bool:
        return self.train_set.labels is not None and self.test_set.labels is not None

    # ---- orchestration -----------------------------------------------------------------------------

    def stages(self) -> list[tuple[str, callable, float]]:
        b = self.budget
        timed = f"{b.dit_arch} bf16" if native_bf16() and f"{b.dit_arch} bf16" in SECONDS_PER_STEP else b.dit_arch
        dit_min = b.dit_steps * SECONDS_PER_STEP.get(timed, 1.0) / 60
        dit_min = min(dit_min, b.dit_minutes) if b.dit_minutes else dit_min
        if not self.captioned:  # the prior alone, on both threads (no captions: no text model)
            models = ("prior", self.stage_prior, b.prior_steps * SECONDS_PER_STEP["prior"] / 60)
        else:
            models = ("prior+text", self.stage_prior_and_text, max(b.prior_steps * SECONDS_PER_STEP["prior 1 thread"],
                                                                   b.text_steps * SECONDS_PER_STEP["text 1 thread"]) / 60)
        table_images = (len(self.table_rows()) + 3) * self.table_samples
        frozen = self._config("encoder", "encoder", b.encoder_steps).model.backbone in FROZEN_BACKBONES
        encoder_step = SECONDS_PER_STEP["encoder, frozen backbone" if frozen else "encoder"]
        stages = [
            ("encoder", self.stage_encoder, b.encoder_steps * encoder_step / 60),
            ("codes", self.stage_codes, 0.3),
            ("vae", self.stage_vae, b.vae_steps * SECONDS_PER_STEP["vae"] / 60),
            ("dit", self.stage_dit, dit_min),
            models,
            ("table", self.stage_table, len(self.table_rows()) * dit_min + SECONDS_PER_FID_IMAGE * table_images / 60),
            ("samples", self.stage_samples, 2.0),
            ("judge", self.stage_judge, 5.0),  # the first time, 4 of them train the judges (then cached)
            ("evaluate", self.stage_evaluate, SECONDS_PER_FID_IMAGE * 3 * b.fid_samples / 60),
            ("toy", self.stage_toy, 3 * len(b.toy_ns) * b.toy_steps * SECONDS_PER_STEP["toy"] / 60),
            ("report", self.stage_report, 0.1),
        ]
        skip = ({"judge"} if self.dataset != "glyphs" else set()) | (set() if b.vae_steps else {"vae"})
        return [s for s in stages if s[0] not in skip | (set() if self.table else {"table"})]

    def run(self) -> Path:
        stages = self.stages()
        total = sum(est for name, _, est in stages if not self.done(name))
        print(f"dlc demo: {len(stages)} stages in {self.root}, about {total:.0f} min of work left on 2 CPU cores"
              f"{' (quick smoke run)' if self.quick else ''}")
        for number, (name, fn, estimate) in enumerate(stages, 1):
            prefix = f"[{number}/{len(stages)}] {name}"
            if self.done(name):
                print(f"{prefix}: done in an earlier run ({self.state[name]['seconds'] / 60:.1f} min), reused")
                continue
            print(f"{prefix}: starting (about {estimate:.1f} min)", flush=True)
            started = time.time()
            result = fn() or {}
            self.state[name] = {"seconds": round(time.time() - started, 1), "result": result}
            self.state_path.write_text(json.dumps(self.state, indent=1))
            print(f"{prefix}: finished in {self.state[name]['seconds'] / 60:.1f} min", flush=True)
        report = self.root / "report.html"
        print(f"dlc demo: open {report}")
        return report

    def done(self, name: str) -> bool:
        """Whether stage ``name`` finished in an earlier run (the report is always written again)."""
        return name in self.state and name != "report"

    def _config(self, stage: str, run: str, steps: int, settings: dict | None = None):
        """The demo's preset of ``stage`` for one of its models: its run directory, data, steps and settings."""
        changes = {"run_dir": str(self.root / run), "train.steps": steps, **(settings or {})}
        if stage in DATA_STAGES:
            changes = {"data.dataset": self.dataset, "data.size": SIZE, "data.channels": 3, **changes}
        if self.quick:
            changes["train.checkpoint_every"] = max(1, steps)
        return configs.replace(STAGES[stage].load_config(self.preset), **changes)

    def _train(self, stage: str, run: str, steps: int, settings: dict | None = None) -> RunDir:
        return STAGES[stage].train(self._config(stage, run, steps, settings))

    def _train_side_by_side(self, jobs: list[tuple]) -> None:
        """Train several models at once, each in its own ``python -m dlc train`` process with an equal
        share of the CPU threads. For models this small one process gains little from a second core
        (measured: the prior 1.7x, the text model 1.35x), so two side by side finish sooner than one
        after the other. A failed or interrupted child leaves its checkpoints; a re-run resumes."""
        threads = max(1, torch.get_num_threads() // len(jobs))
        children = []
        for position, (stage, run, steps, settings) in enumerate(jobs):
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   "TQDM_POSITION": str(position)}  # one progress bar per line
            path = self.root / "configs" / f"{run}.yaml"
            path.parent.mkdir(exist_ok=True)
            configs.save_config(self._config(stage, run, steps, settings), path)
            command = [sys.executable, "-m", "dlc", "train", stage, "--config", str(path)]
            children.append((stage, subprocess.Popen(command, env=env)))
        try:
            exits = [(stage, child.wait()) for stage, child in children]
        finally:
            for _, child in children:  # on an interrupt: let the children save and stop
                child.wait()
        failed = [f"{stage} (exit code {code})" for stage, code in exits if code]
        if failed:
            raise DLCError(f"training failed: {', '.join(failed)}; its messages are above. A re-run resumes "
                           "from the last checkpoint.")

    # ---- stages ------------------------------------------------------------------------------------

    def stage_encoder(self) -> dict:
        self._train("encoder", "encoder", self.budget.encoder_steps)
        return {}

    def encoder(self):
        from .encoder import DLCEncoder

        return DLCEncoder.from_pretrained(self.root / "encoder").eval().to(
            "cuda" if torch.cuda.is_available() else "cpu")

    def stage_codes(self) -> dict:
        from .eval.codes import batched, evaluate_codes, usage_stats

        encoder = self.encoder()
        codes = {split: batched(encoder.encode, dataset.images) for split, dataset in
                 (("train", self.train_set), ("test", self.test_set))}
        for split, split_codes in codes.items():
            save_codes(self.root / "codes" / f"{split}.npy", split_codes)
        if not self.labelled:
            return {"usage": usage_stats(codes["train"], self.vocab_size)}
        return evaluate_codes(encoder, self.train_set, self.test_set, progress=False)

    @cached_property
    def vocab_size(self) -> int:
        return self.encoder().config.vocab_size

    def stage_vae(self) -> dict:
        return {"vae": self._train("vae", "vae", self.budget.vae_steps).read_metrics()[-1]}

    def stage_dit(self) -> dict:
        self._train("dit", "dit", self.budget.dit_steps, {**self.dit_settings(), **self.dlc_condition(),
                                                          "train.keep_checkpoints": 0})  # benchmarks/dit_curve.py
        return {}

    def dit_settings(self) -> dict:
        """The main DiT's training: the table's rows are trained the same way."""
        b = self.budget
        return {"model.arch": b.dit_arch, "latent": str(self.root / "vae" / "model") if b.vae_steps else "pixel",
                "sample.guidance_scale": b.guidance, "sample.steps": b.sample_steps,
                "train.time_limit_minutes": b.dit_minutes, "train.lr_schedule": "cosine", "train.min_lr_ratio": 0.1,
                "train.mixed_precision": "bf16" if native_bf16() else "auto"}

    def dlc_condition(self) -> dict:
        """A DiT conditioned on the demo's stored training codes."""
        return {"condition.kind": "codes", "condition.codes": str(self.root / "codes" / "train.npy"),
                "condition.vocab_size": self.vocab_size}

    def prior_job(self) -> tuple:
        b = self.budget
        return ("prior", "prior", b.prior_steps, {
            "data.codes": str(self.root / "codes" / "train.npy"), "model.code_length": None,
            "model.vocab_size": self.vocab_size, "train.sample_every": 0,
            "sample.steps": b.prior_sample_steps, "sample.num": 128})  # the final check: the demo's sampler

    def text_job(self) -> tuple:
        return ("text", "text", self.budget.text_steps, {
            "codes.source": "codes", "codes.codes": str(self.root / "codes" / "train.npy"),
            "codes.vocab_size": self.vocab_size})

    def stage_prior(self) -> dict:
        return {"prior": self._train(*self.prior_job()).read_metrics()[-1]}

    def stage_prior_and_text(self) -> dict:
        self._train_side_by_side([self.prior_job(), self.text_job()])
        return {"prior": RunDir(self.root / "prior").read_metrics()[-1]}

    def table_rows(self) -> dict[str, str]:
        """The table's DiTs besides the main one: name -> condition.kind."""
        return {"none": "none", **({"class": "class"} if self.labelled else {})}

    @property
    def table_samples(self) -> int:
        """Images per table row: every held-out image (372 test emoji), at most 1,000 (a quick run: its FID count)."""
        return self.budget.fid_samples if self.quick else min(len(self.test_set), 1000)

    def stage_table(self) -> dict:
        """The paper's conditioning table: the unconditional and class DiTs trained exactly as the main
        one, for the steps it reached (without the time cap that may have stopped it early), then every
        row sampled without guidance (as the paper's ablation) for every held-out image and scored, the
        main DiT standing for the DLC rows."""
        steps = RunDir(self.root / "dit").checkpoint_steps()[-1]
        for name, kind in self.table_rows().items():
            print(f"  table: training the {name} DiT ({steps} steps, as the main DiT)")
            self._train("dit", f"table/{name}", steps, {**self.dit_settings(), "condition.kind": kind,
                                                        "train.time_limit_minutes": 0})
        m, test_codes = self.table_samples, load_codes(self.root / "codes" / "test.npy")
        rows = {"table-none": ("none (unconditional DiT)", "table/none", {}, {"num_images": m}),
                **({"table-class": ("class label", "table/class", {}, {"codes": self.test_set.labels[:m].view(-1, 1)})}
                   if self.labelled else {}),
                "table-prior": ("DLC from the prior", "dit", {"prior": "prior"}, {"num_images": m}),
                "table-encoded": ("DLC encoded from test images", "dit", {}, {"codes": test_codes[:m]})}
        return {"rows": self.scored_sets({folder: (*spec, 1.0) for folder, spec in rows.items()}, m,
                                         sources=self.test_set.images[:m]), "steps": steps}

    # ---- sampling ----------------------------------------------------------------------------------

    def pipeline(self, run: str = "dit", **parts: str):
        """The DLCPipeline of the DiT in ``run`` with the demo's ``parts`` (encoder, prior, text_model)."""
        from .pipeline import DLCPipeline

        key = (run, *sorted(parts.items()))
        if key not in self._pipelines:
            pipe = DLCPipeline.from_runs(self.root / run, **{k: self.root / v for k, v in parts.items()})
            pipe.to("cuda" if torch.cuda.is_available() else "cpu").set_progress_bar_config(disable=True)
            self._pipelines[key] = pipe
        return self._pipelines[key]

    def draw(self, pipe, guidance: float = 1.0, seed: int = 0, **inputs):
        """``pipe``'s output (uint8 ``images`` and their ``codes``) for its inputs (codes, num_images, prompt,
        compose, ...) at the demo's sampler settings."""
        from .pipeline import PriorSampling

        return pipe(guidance_scale=guidance, num_inference_steps=self.budget.sample_steps,
                    generator=torch.Generator().manual_seed(seed),
                    prior_sampling=PriorSampling(steps=self.budget.prior_sample_steps), batch_size=64,
                    output_type="uint8", **inputs)

    def generate(self, pipe, guidance: float = 1.0, seed: int = 0, **inputs) -> torch.Tensor:
        """uint8 images of ``draw``."""
        return self.draw(pipe, guidance, seed, **inputs).images

    def stage_samples(self) -> dict:
        g, n = self.budget.guidance, 16
        real = self.test_set.images[:n]
        save_grid(real, self.figures / "real.png", labels=(self.names(self.test_set) or [])[:n] or None, nrow=8, scale=2)
        recon = self.generate(self.pipeline(encoder="encoder"), g, image=real)
        save_image(pairs_grid(real, recon, names=PAIR_NAMES), self.figures / "reconstructions.png")
        train_real = self.train_set.images[:n]
        train_recon = self.generate(self.pipeline(encoder="encoder"), g, image=train_real)
        save_image(pairs_grid(train_real, train_recon, names=PAIR_NAMES), self.figures / "reconstructions_train.png")
        prior_samples = self.generate(self.pipeline(prior="prior"), g, num_images=32)
        save_grid(prior_samples, self.figures / "prior_samples.png", nrow=8, scale=2)
        parents = self.composition_parents(4)
        rows = [torch.cat([self.test_set.images[[a, b]], composed])
                for (a, b), composed in zip(parents, self.compositions(parents, 6))]
        save_grid(torch.cat(rows), self.figures / "compositions.png", nrow=8, scale=display_scale(rows[0].shape[-1]),
                  labels=(["parent A", "parent B"] + [""] * 6) * len(parents))
        result = {"parents": parents}
        for name, prompts in self.prompts().items():
            images = self.generate(self.pipeline(text_model="text"), g, prompt=prompts, num_images_per_prompt=4)
            save_grid(images, self.figures / f"text_{name}.png", labels=[p for p in prompts for _ in range(4)], nrow=4,
                      scale=2)
            result[f"{name}_prompts"] = prompts
        return result

    def compositions(self, parents: list[tuple[int, int]], num: int, guidance: float | None = None) -> list[torch.Tensor]:
        """``num`` images composed from the test codes of each (A, B) pair of test indices, seeded by A,
        at the demo's guidance unless given."""
        return [drawn.images for drawn in self.composed_draws(parents, num, guidance)]

    def composed_draws(self, parents: list[tuple[int, int]], num: int, guidance: float | None = None) -> list:
        """``compositions`` with their codes: the pipeline's output for each pair."""
        test_codes = load_codes(self.root / "codes" / "test.npy")
        guidance = self.budget.guidance if guidance is None else guidance
        return [self.draw(self.pipeline(), guidance, seed=a, compose=[test_codes[a], test_codes[b]], num_images=num)
                for a, b in parents]

    def composition_parents(self, num: int) -> list[tuple[int, int]]:
        """``num`` pairs of test images (indices) drawn with a fixed seed, the two differing in every known
        factor (the glyphs' letter, colour, background and font) or at least in label where enough do."""
        fields = [torch.as_tensor(self.test_set.fields[f]) for f in getattr(self.test_set, "factors", {})]
        if not fields and self.test_set.labels is not None:
            fields = [self.test_set.labels]
        order = torch.randperm(len(self.test_set), generator=torch.Generator().manual_seed(0)).tolist()
        candidates = list(zip(order[0::2], order[1::2]))
        differing = [(a, b) for a, b in candidates if all(f[a] != f[b] for f in fields)]
        # too few differ (one class only, a tiny test set): any pairs make up the number
        return (differing + [p for p in candidates if p not in differing])[:num]

    def prompts(self) -> dict[str, list[str]]:
        """Up to four prompts seen in text training ("train") and four held out of it ("heldout"),
        from the dataset's own (dlc/data/defaults.py) and its captions; none without captions."""
        if not self.captioned:
            return {}
        heldout = self.defaults.heldout or (lambda caption: False)
        captions = [c for c in dict.fromkeys([*self.defaults.prompts, *self.train_set.captions,
                                              *(self.test_set.captions or [])]) if c]
        chosen = {"train": [c for c in captions if not heldout(c)][:4], "heldout": [c for c in captions if heldout(c)][:4]}
        return {name: prompts for name, prompts in chosen.items() if prompts}

    @staticmethod
    def names(dataset) -> list[str] | None:
        """Each image's caption ("" where it has none), else its class name; None without either."""
        if dataset.captions is not None:
            return [c or "" for c in dataset.captions]
        if dataset.labels is not None:
            return [dataset.class_names[i] for i in dataset.labels.tolist()]
        return None

    # ---- evaluation --------------------------------------------------------------------------------

    def stage_judge(self) -> dict:
        """Glyphs only: reconstructions, compositions and prompts judged by the factor classifiers."""
        return self.judge(self.budget.guidance)

    def judge(self, guidance: float) -> dict:
        """Glyph samples judged by the factor classifiers (dlc.eval.glyphs) at ``guidance``. Reconstructions: 64 test glyphs drawn
        from their own codes. Compositions: parents that differ in letter and colour, 8 samples each; a
        cross is the letter of one parent in the colour of the other. Prompts: two captions of each of
        four colour x letter pairs seen in text training, and of the four held out of it, 4 images each.
        The composed and the prompted codes are also read by the code probes (``composed_codes``,
        ``*_prompt_codes``): what is lost before the DiT draws them."""
        from .eval.glyphs import composition_scores

        judges, pair_of, captions = self.glyph_judges, self.glyph_pairs, self.test_set.captions
        parents = self.composition_parents(JUDGED_PARENTS)
        draws = self.composed_draws(parents, 8, guidance)
        result = {"parents": len(parents), "samples_per_parents": 8, "judges": judges.accuracy}
        for key, read in (("composition", lambda d: judges.names(judges.predict(d.images))),
                          ("composed_codes", lambda d: judges.names(self.code_probes.predict(d.codes)))):
            per_parents = [composition_scores(pair_of[captions[a]], pair_of[captions[b]], read(drawn))
                           for (a, b), drawn in zip(parents, draws)]
            result[key] = {k: sum(p[k] for p in per_parents) / len(per_parents) for k in per_parents[0]}
        sources = [i for pair in self.composition_parents(JUDGED_RECONSTRUCTIONS // 2) for i in pair]  # spread out
        test_codes = load_codes(self.root / "codes" / "test.npy")
        result["reconstructions"] = self.judged_draws(
            [pair_of[captions[i]] for i in sources],
            self.generate(self.pipeline(), guidance, seed=3, codes=test_codes[sources]))
        for name, prompts in self.judged_prompts().items():
            drawn = self.draw(self.pipeline(text_model="text"), guidance, seed=2, prompt=prompts, num_images_per_prompt=4)
            targets = [pair_of[p] for p in prompts for _ in range(4)]
            result[f"{name}_prompts"] = self.judged_draws(targets, drawn.images)
            result[f"{name}_prompt_codes"] = self.judged_codes(targets, drawn.codes)
        return result

    @cached_property
    def code_probes(self):
        """Linear probes reading the letter and colour from the training images' one-hot codes (the codes
        stage's probe): they judge the codes the text model and compositions write, before the DiT."""
        from .eval.codes import CodeProbes, factor_labels

        return CodeProbes(load_codes(self.root / "codes" / "train.npy"),
                          {f: factor_labels(self.train_set, f) for f in ("letter", "colour")}, self.vocab_size)

    def judged_draws(self, targets: list[tuple[str, str]], images: torch.Tensor) -> dict:
        """Shares of ``images`` the judges read as their target (letter, colour), right letter, right colour."""
        return self._shares(targets, self.glyph_judges.predict(images), "images")

    def judged_codes(self, targets: list[tuple[str, str]], codes: torch.Tensor) -> dict:
        """Shares of ``codes`` the code probes read as their target (letter, colour), right letter, right colour."""
        return self._shares(targets, self.code_probes.predict(codes), "codes")

    @staticmethod
    def _shares(targets: list[tuple[str, str]], predicted: dict[str, torch.Tensor], noun: str) -> dict:
        from .eval.glyphs import GlyphJudges, prompt_scores

        scores = prompt_scores(targets, GlyphJudges.names(predicted))
        return {**{k: v for k, v in scores.items() if k != "per_prompt"}, noun: len(targets)}

    @cached_property
    def glyph_judges(self):
        """The glyph factor classifiers (trained the first time, then cached; dlc.eval.glyphs)."""
        from .eval import glyphs

        return glyphs.load_glyph_judges(SIZE, "cuda" if torch.cuda.is_available() else "cpu")

    @cached_property
    def judged_test_features(self) -> torch.Tensor:
        """The judges' features of the test glyphs: the reference of every row's KID (judges)."""
        return self.glyph_judges.features(self.test_set.images)

    @cached_property
    def glyph_pairs(self) -> dict[str, tuple[str, str]]:
        """Every glyph caption -> its (letter, colour) names."""
        return {c: (letter, colour) for split in (self.train_set, self.test_set)
                for c, letter, colour in zip(split.captions, split.fields["letter_name"], split.fields["colour_name"])}

    def judged_prompts(self) -> dict[str, list[str]]:
        """Two captions each of four colour x letter pairs seen in text training ("train", spread over
        the training split) and of the four held out of it ("heldout", from the test split)."""
        pair_of = self.glyph_pairs
        chosen = {}
        for name, split in (("train", self.train_set), ("heldout", self.test_set)):
            by_pair = {}
            for caption in split.captions:
                if bool(self.defaults.heldout(caption)) == (name == "heldout"):
                    by_pair.setdefault(pair_of[caption], []).append(caption)
            pairs = list(by_pair.values())
            chosen[name] = [c for captions in pairs[::max(1, len(pairs) // 4)][:4] for c in captions[:2]]
        return chosen

    def stage_evaluate(self) -> dict:
        """FID and KID of the main DiT's pictures (CFG, ``fid_samples`` each) against the held-out split;
        the images are kept in fid/NAME/ for ``dlc fid``."""
        n, g, arch = self.budget.fid_samples, self.budget.guidance, self.budget.dit_arch
        test_codes = load_codes(self.root / "codes" / "test.npy")
        return {"fid": self.scored_sets({
            "prior": (f"{arch}: DLC from the prior, CFG {g}", "dit", {"prior": "prior"}, {"num_images": n}, g),
            "encoded": (f"{arch}: DLC encoded from test images, CFG {g}", "dit", {},
                        {"codes": test_codes[torch.arange(n) % len(test_codes)]}, g)}, n)}

    def scored_sets(self, sets: dict[str, tuple], count: int, sources: torch.Tensor | None = None) -> list[dict]:
        """One scored row per set (folder -> label, DiT run, parts, inputs, guidance), then the real
        training images' floor at the same sample count; with ``sources``, each row's error to them."""
        return [*(self.scored_set(folder, *spec, source=sources) for folder, spec in sets.items()),
                self.scored(f"real training {self.noun} (floor at this sample count)", self.train_set.images[:count],
                            source=sources)]

    def scored_set(self, folder: str, label: str, run: str, parts: dict, inputs: dict, guidance: float,
                   source: torch.Tensor | None = None) -> dict:
        """Generate one set, keep it in fid/``folder``/ and score it, with the commands that remake the row."""
        images = self.generate(self.pipeline(run, **parts), guidance, seed=1, **inputs)
        save_pngs(images, self.root / "fid" / folder)
        return self.scored(label, images, source, train=f"dlc train dit --config {self.root / run / 'config.yaml'}",
                           score=f"dlc fid {self.root / 'fid' / folder} --reference {self.reference}")

    @property
    def reference(self) -> str:
        """The held-out split by name (its Inception features are cached)."""
        return f"{self.dataset}-{SIZE}-{self.test_split}"

    def scored(self, label: str, images: torch.Tensor, source: torch.Tensor | None = None, **commands: str) -> dict:
        """A report row: FID and KID (with its standard deviation over subsets) of ``images``; with
        ``source`` (as many held-out images), the mean squared error of image i to source i."""
        from .eval import fid

        scores = fid(images, self.reference, kid=True, isc=False, progress=False)
        print(f"  FID {label}: {scores['fid']:.1f}, KID {scores['kid']:.4f}")
        row = {"conditioning": label, "FID": round(scores["fid"], 1), "KID": round(scores["kid"], 4),
               "KID std": round(scores["kid_std"], 4)}
        if self.dataset == "glyphs":  # a second distance, in features that owe nothing to Inception
            from .eval.fidelity import kid_from_features

            judged = kid_from_features(self.glyph_judges.features(images), self.judged_test_features)
            row.update({JUDGE_KID: round(judged["kid"], 4), f"{JUDGE_KID} std": round(judged["kid_std"], 4)})
        if source is not None:  # [-1, 1] pixel units
            row[SOURCE_ERROR] = round(float((data.to_float(images) - data.to_float(source)).pow(2).mean()), 3)
        return {**row, "samples": len(images), "reference": self.reference_name,
                "sampler": f"{self.budget.sample_steps} steps" if commands else "-", **commands}

    # ---- the toy experiment -------------------------------------------------------------------------

    def stage_toy(self) -> dict:
        from . import toy

        base = toy.QUICK if self.quick else toy.ToyConfig()
        config = replace(base, ns=self.budget.toy_ns, steps=self.budget.toy_steps)
        results = toy.run(config, self.root / "toy")
        command = "dlc toy" + (" --quick" if self.quick else "") + (
            f" --n {' '.join(map(str, config.ns))}" if config.ns != base.ns else "") + (
            f" --steps {config.steps}" if config.steps != base.steps else "")
        return {"table": toy.table(results), "steps": config.steps, "kde_samples": config.kde_samples,
                "command": command}

    @staticmethod
    def toy_section(result: dict) -> Section:
        return Section(
            "The paper's toy experiment: one hard distribution or many easy ones",
            "2-D mixtures of N Gaussians (variance 0.1, means on a grid of spacing 1.0). The same small MLP "
            f"diffusion model (flow matching, {result['steps']} steps) is trained unconditionally, conditioned on "
            "the index of the Gaussian each sample came from (oracle), and conditioned on the index a fitted "
            "Gaussian mixture model assigns (GMM). KL(data ‖ model) in nats, estimated with a Gaussian KDE on "
            f"{result['kde_samples']} samples of each; the floor is the same estimate for fresh data samples "
            "(the KDE's own bias). The paper: the unconditional model's KL grows with N, the conditioned "
            f"models' stays low. Reproduce with `{result['command']}` (the same numbers).",
            images=[("toy/kl.png", "KL(data ‖ model) against N"),
                    ("toy/samples.png", "samples: data, then each model; the Gaussians' means marked")],
            tables=[result["table"]])

    # ---- report ------------------------------------------------------------------------------------

    def stage_report(self) -> dict:
        runs = {name: RunDir(self.root / name) for name in ("encoder", "vae", "dit", "prior", "text")}
        runs.update({f"table/{n}": RunDir(self.root / "table" / n) for n in ("none", "class")})
        losses = plot_losses({k: v for k, v in runs.items() if v.metrics_path.exists()}, self.figures / "losses.png")
        seconds = {name: s["seconds"] for name, s in self.state.items()}
        total = sum(seconds.values()) / 60
        b, noun = self.budget, self.noun
        results = {name: stage["result"] for name, stage in self.state.items()}
        sections = self.picture_sections() if "samples" in results else []  # only the pictures this run made
        if "judge" in results:
            sections.append(self.judge_section(results["judge"], results["codes"]))
        if "evaluate" in results:
            sections.append(Section(
                "FID", f"The main DiT's pictures against the {self.reference_name}: FID and KID (unbiased, with its "
                f"standard deviation over subsets) on {b.fid_samples} samples. FID is biased high at this count: "
                f"compare rows, and with the real images' floor, not with the paper. {self.fid_caveat()}",
                tables=[[self.without_commands(r) for r in results["evaluate"]["fid"]]]))
        if "table" in results:
            sections.append(self.table_section(**results["table"]))
        if "codes" in results:
            sections.append(self.codes_section(results["codes"], noun))
        if "toy" in results:
            sections.append(self.toy_section(results["toy"]))
        if losses:
            sections.append(Section("Training curves", images=[("report/losses.png", "loss against step")]))
        sections.append(Section("Time", f"Total {total:.1f} min on this machine.",
                                tables=[[{"stage": k, "minutes": round(v / 60, 2)} for k, v in seconds.items()]]))
        title = {"emoji": "colour emoji", "glyphs": "glyphs (rendered letters)"}.get(self.dataset, self.dataset)
        write_report(self.root, f"dlc demo: Discrete Latent Codes on {title}",
                     f"{self.models_trained()} trained from scratch on {len(self.train_set)} {noun} at {SIZE}x{SIZE}"
                     f"{self.pretrained_parts()}{' (quick smoke run: quality not expected)' if self.quick else ''}.",
                     sections)
        return {}

    def models_trained(self) -> str:
        names = ["encoder", *(["VAE"] if self.budget.vae_steps else []), "DiT", "prior",
                 *(["text model"] if self.captioned else [])]
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        return listed[0].upper() + listed[1:]

    def pretrained_parts(self) -> str:
        """What came pretrained: the encoder's frozen Inception, the text model's frozen MiniLM."""
        kind = (RunDir(self.root / "text").saved_config().get("model") or {}).get("kind")
        parts = (["the encoder's SEM reads a frozen pretrained Inception-v3 (the FID network)"] if self.encoder_on_fid_network
                 else []) + (["the text model reads captions through a frozen pretrained MiniLM"] if kind == "minilm" else [])
        return "".join(f"; {p}" for p in parts)

    @property
    def encoder_on_fid_network(self) -> bool:
        """True when the encoder's backbone is the FID Inception: FID and Inception KID then judge
        pictures made from that network's own view of them."""
        model = RunDir(self.root / "encoder").saved_config().get("model") or {}
        return model.get("backbone") == "fid_inception"

    def fid_caveat(self) -> str:
        """Beside every FID: what the numbers can and cannot say on this run."""
        caveat = []
        if self.encoder_on_fid_network:
            caveat.append("The encoder is built on the FID network (a frozen Inception-v3 under the SEM): FID and "
                          "KID are not independent judges of these pictures.")
        if self.dataset == "glyphs":
            caveat.append(f"{JUDGE_KID} is KID in the glyph judges' own features (trained on another rendering, "
                          "no Inception); the factor scores above judge letter and colour exactly.")
        return " ".join(caveat)

    @staticmethod
    def without_commands(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in ("train", "score")}

    def table_section(self, rows: list[dict], steps: int) -> Section:
        b = self.budget
        by_name = {r["conditioning"]: r for r in rows}
        none, encoded = by_name["none (unconditional DiT)"], by_name["DLC encoded from test images"]
        commands = [{"conditioning": r["conditioning"], "train": r["train"], "score": r["score"]}
                    for r in rows if "train" in r]
        return Section(
            "The paper's conditioning table",
            f"Every row's DiT trained as the main one ({b.dit_arch}, {steps} steps of batch 32; the DLC rows are "
            f"the main DiT), sampled without guidance as in the paper's ablation, scored on {rows[0]['samples']} "
            f"samples against the {self.reference_name}. The paper's ordering is unconditional >> class > DLC from "
            f"the prior >= DLC encoded; here the unconditional FID is {none['FID'] / encoded['FID']:.2f}x the "
            f"DLC-encoded one (KID, unbiased at any count: {none['KID'] / encoded['KID']:.2f}x). "
            f"{SOURCE_ERROR}: sample i against held-out image i, in [-1, 1] pixel units: how much of that very "
            "image its condition carries (sample i of the class row has image i's label, of the encoded row its "
            "code; the other rows' samples are unrelated to it, their error is the baseline). "
            "Each row's samples are kept: its `score` command recomputes its "
            "FID and KID, its `train` command retrains its DiT; `dlc demo --table` makes the whole table. "
            + self.fid_caveat(),
            tables=[[self.without_commands(r) for r in rows], commands])

    def picture_sections(self) -> list[Section]:
        b, noun, held_out = self.budget, self.noun, self.reference_name
        unseen = ("never seen by any model" if self.test_split != "train" else
                  "the folder has no test/ or val/ split, so these were seen in training")
        sections = [
            Section(f"Real {noun} ({held_out})", images=[("report/real.png", f"the {held_out} with their names")]),
            Section("Reconstructions: image → code → image",
                    f"Each image beside the DiT's image from its {self.code_shape()} code ({b.sample_steps} sampler "
                    f"steps, guidance {b.guidance}). The first are from the {held_out} ({unseen}); the second from "
                    "the training images.",
                    images=[("report/reconstructions.png", "held-out images: each original beside its image from its code"),
                            ("report/reconstructions_train.png", "the same for training images")]),
            Section("Unconditional samples: codes from the prior, images from the DiT",
                    images=[("report/prior_samples.png", "32 codes drawn from the masked-diffusion prior")]),
            Section("Compositions", "Each row: parent A, parent B, then six images from codes whose tokens "
                    "are taken at random from A or B (positions where both agree stay fixed).",
                    images=[("report/compositions.png", "parents, then composed samples")]),
        ]
        prompts = self.state["samples"]["result"]
        texts = [(f"report/text_{name}.png", caption) for name, caption in
                 (("train", "prompts seen in training"), ("heldout", "held-out prompts")) if f"{name}_prompts" in prompts]
        if texts:
            sections.append(Section("Text to image", "Codes generated from a prompt by the text model, then images "
                                    "by the DiT. Held-out prompts name captions left out of text training (the "
                                    "dataset's held-out list).", images=texts))
        return sections

    @staticmethod
    def judge_section(judged: dict, codes: dict) -> Section:
        """The glyph goals, each judged: probes from the codes stage, compositions and prompts by the
        factor classifiers."""
        factors, composition, recon = codes["factors"], judged["composition"], judged.get("reconstructions")
        rows = [
            ("letter probe from codes", factors["letter"]["codes"],
             f"≥ 0.80 and ≥ 0.9 of the features' ({factors['letter']['features']:.3f}): ratio {factors['letter']['ratio']:.2f}"),
            ("colour probe from codes", factors["colour"]["codes"], f"≥ 0.95 (features {factors['colour']['features']:.3f})"),
            *([(f"test images drawn from their codes: right letter and colour (letter {recon['letter']:.2f}, "
                f"colour {recon['colour']:.2f})", recon["both"], "")] if recon else []),
            ("compositions: a cross (letter of one parent, colour of the other)", composition["cross"], "≥ 0.25"),
            ("compositions: parent A's own letter and colour", composition["parent_a"], ""),
            ("compositions: parent B's own letter and colour", composition["parent_b"], ""),
            *[(f"{kind} prompts: right letter and colour (letter {p['letter']:.2f}, colour {p['colour']:.2f})",
               p["both"], goal) for kind, p, goal in (("held-out", judged["heldout_prompts"], "≥ 0.50"),
                                                     ("trained", judged["train_prompts"], ""))],
            *[(f"{what}, read from their codes by the probes", share, "") for what, share in (
                ("compositions: a cross", judged.get("composed_codes", {}).get("cross")),
                ("held-out prompts: right letter and colour", judged.get("heldout_prompt_codes", {}).get("both")),
                ("trained prompts: right letter and colour", judged.get("train_prompt_codes", {}).get("both")))
              if share is not None],
        ]
        judges = ", ".join(f"{f} {a:.3f}" for f, a in judged["judges"].items())
        return Section(
            "Glyphs judged by their factors",
            f"Linear probes on the test glyphs' one-hot codes; {recon['images'] if recon else 0} test glyphs drawn "
            f"from their own codes; compositions of {judged['parents']} test-image pairs "
            f"that differ in letter and colour ({judged['samples_per_parents']} samples each) and images drawn for "
            f"{judged['heldout_prompts']['images']} held-out / {judged['train_prompts']['images']} trained prompts, "
            f"judged by classifiers trained on another rendering (their accuracy on real test glyphs: {judges}).",
            tables=[[{"measure": m, "value": round(v, 3), "goal": g} for m, v, g in rows]])

    @staticmethod
    def codes_section(result: dict, noun: str) -> Section:
        usage = [{"code usage (training images)": k.replace("_", " "), "value": v} for k, v in result["usage"].items()]
        if "codes" not in result:
            return Section("Codes", "How the codes use their values (the images have no labels to probe).",
                           tables=[usage])
        accuracy = [{f"label accuracy on the held-out {noun}": name, "one-hot codes": result["codes"][key],
                     "continuous features": result["features"][key]}
                    for name, key in (("linear probe", "linear_probe"), ("20-NN", "knn"))]
        factors = [{"factor": f, "chance": r["chance"], "one-hot codes": r["codes"], "continuous features": r["features"],
                    "ratio": r["ratio"]} for f, r in result.get("factors", {}).items()]
        return Section("Codes", "How much of an image's label its code keeps (linear probe and 20-NN on one-hot "
                       "codes against the encoder's continuous features), and how the codes use their values.",
                       tables=[accuracy, *([factors] if factors else []), usage])

    def code_shape(self) -> str:
        codes = load_codes(self.root / "codes" / "test.npy")
        return f"L={codes.shape[1]}, V={self.vocab_size}"
