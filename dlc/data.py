"""Datasets: colour emoji and Fashion-MNIST (offline, from Debian packages), image folders and
webdataset shards.

Every dataset yields dicts with ``image`` (uint8 tensor C,H,W), ``label`` (int or None) and
``caption`` (str or None), plus dataset-specific fields. ``load(name, ...)`` is the one entry:

    load("emoji", size=32)                 # 3,655 Noto colour emoji, captions = CLDR names
    load("fashion-mnist", size=32, channels=3)
    load("imagefolder:/path/to/images", size=64)
    load("webdataset:/data/shards-{000000..000099}.tar")
"""

from __future__ import annotations

import gzip
import io
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import DataError

EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
EMOJI_TEST_FRACTION = 0.1
SPLIT_SEED = 0


def cache_dir() -> Path:
    """Where rendered datasets and reference statistics are cached (``$DLC_CACHE``)."""
    return Path(os.environ.get("DLC_CACHE", Path.home() / ".cache" / "dlc"))


def _require(path: Path, package: str) -> None:
    if not path.exists():
        raise DataError(
            f"{path} is missing. It comes from the Debian package '{package}': "
            f"run 'sudo apt-get install {package}' (or 'make install' as root), then try again."
        )


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 tensor (C, H, W)."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparency is composited on white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("P", "LA", "PA") or (image.mode == "RGBA") or "transparency" in image.info:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the short side to ``size`` (Lanczos), then crop the centre square."""
    w, h = image.size
    scale = size / min(w, h)
    if (w, h) != (size, size):
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.LANCZOS)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


# --------------------------------------------------------------------------------------------
# In-memory datasets (emoji, Fashion-MNIST)


class TensorImageDataset(torch.utils.data.Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W), with labels, captions and fields."""

    def __init__(self, images: torch.Tensor, labels, captions, class_names: list[str], fields=None, name=""):
        self.images = images
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
        self.captions = captions
        self.class_names = class_names
        self.fields = fields or {}
        self.name = name

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __getitem__(self, index: int) -> dict:
        item = {
            "image": self.images[index],
            "label": None if self.labels is None else int(self.labels[index]),
            "caption": None if self.captions is None else self.captions[index],
        }
        for key, values in self.fields.items():
            item[key] = values[index]
        return item

    def subset(self, indices) -> TensorImageDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        pick = indices.tolist()
        return TensorImageDataset(
            self.images[indices],
            None if self.labels is None else self.labels[indices],
            None if self.captions is None else [self.captions[i] for i in pick],
            self.class_names,
            {k: [v[i] for i in pick] for k, v in self.fields.items()},
            self.name,
        )


@dataclass
class EmojiEntry:
    codepoints: str
    name: str
    group: str
    subgroup: str

    @property
    def base_name(self) -> str:
        return self.name.split(":")[0].strip()

    @property
    def skin_tone(self) -> str | None:
        qualifier = self.name.split(":", 1)[1].strip() if ":" in self.name else ""
        return qualifier if "skin tone" in qualifier else None


def read_emoji_list(path: Path = EMOJI_TEST) -> list[EmojiEntry]:
    """The fully-qualified emoji of ``emoji-test.txt``, in file order, with group and subgroup."""
    _require(path, "unicode-data")
    entries, group, subgroup = [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif "; fully-qualified" in line:
            codes, comment = line.split("#", 1)
            chars = "".join(chr(int(c, 16)) for c in codes.split(";")[0].split())
            # comment: " 😀 E1.0 grinning face"
            name = comment.strip().split(" ", 2)[2]
            entries.append(EmojiEntry(chars, name, group, subgroup))
    return entries


def render_emoji(chars: str, size: int, font) -> Image.Image:
    """One emoji, tightly cropped, centred on a white square, resized with Lanczos."""
    from PIL import ImageDraw

    canvas = Image.new("RGBA", (320, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((8, 8), chars, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        raise DataError(f"the emoji font has no glyph for {chars!r}")
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((size, size), Image.LANCZOS)


def _render_all_emoji(size: int) -> tuple[np.ndarray, list[EmojiEntry]]:
    from PIL import ImageFont
    from tqdm import tqdm

    _require(EMOJI_FONT, "fonts-noto-color-emoji")
    entries = read_emoji_list()
    font = ImageFont.truetype(str(EMOJI_FONT), 109)  # a bitmap font: 109 px is its only size
    images = np.stack(
        [np.asarray(render_emoji(e.codepoints, size, font)) for e in tqdm(entries, desc=f"rendering emoji at {size}px", leave=False)]
    )
    return images.transpose(0, 3, 1, 2), entries


def emoji_split(subgroups: list[str], test_fraction: float = EMOJI_TEST_FRACTION, seed: int = SPLIT_SEED) -> np.ndarray:
    """Boolean test mask: in each subgroup (file order), fraction * n (rounded half up) emoji drawn with a
    fixed seed go to test. Deterministic for a given emoji-test.txt."""
    rng = np.random.default_rng(seed)
    subgroups = np.asarray(subgroups)
    is_test = np.zeros(len(subgroups), dtype=bool)
    for subgroup in dict.fromkeys(subgroups.tolist()):
        members = np.flatnonzero(subgroups == subgroup)
        n_test = int(test_fraction * len(members) + 0.5)  # round half up: 5 members -> 1
        is_test[members[rng.permutation(len(members))[:n_test]]] = True
    return is_test


def load_emoji(size: int = 32, split: str = "train") -> TensorImageDataset:
    """The Noto colour emoji: ``split`` is "train" (about 90%), "test" (about 10%, stratified by
    subgroup) or "all". Rendered once per size and cached under ``cache_dir()``."""
    path = cache_dir() / f"emoji-{size}.npz"
    if path.exists():
        stored = np.load(path, allow_pickle=False)
        images = stored["images"]
        meta = json.loads(str(stored["meta"]))
        entries = [EmojiEntry(**m) for m in meta]
    else:
        images, entries = _render_all_emoji(size)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps([e.__dict__ for e in entries])
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=images, meta=np.asarray(meta))
        tmp.replace(path)
    subgroup_names = list(dict.fromkeys(e.subgroup for e in entries))
    labels = [subgroup_names.index(e.subgroup) for e in entries]
    full = TensorImageDataset(
        torch.from_numpy(np.ascontiguousarray(images)),
        labels,
        [e.name for e in entries],
        subgroup_names,
        {
            "group": [e.group for e in entries],
            "subgroup": [e.subgroup for e in entries],
            "base_name": [e.base_name for e in entries],
            "skin_tone": [e.skin_tone for e in entries],
            "emoji": [e.codepoints for e in entries],
        },
        name="emoji",
    )
    return _split(full, emoji_split([e.subgroup for e in entries]), split)


def _split(full: TensorImageDataset, is_test: np.ndarray, split: str) -> TensorImageDataset:
    if split == "all":
        return full
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}: expected 'train', 'test' or 'all'")
    return full.subset(np.flatnonzero(is_test if split == "test" else ~is_test))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(size: int = 28, split: str = "train", channels: int = 1) -> TensorImageDataset:
    """Fashion-MNIST (train 60,000 / test 10,000). ``size`` 32 pads the 28x28 images with black
    borders; ``channels`` 3 repeats the grey channel for models that expect RGB."""
    if size < 28:
        raise DataError(f"fashion-mnist images are 28x28; size must be >= 28 (got {size})")
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3 (got {channels})")
    prefix = {"train": "train", "test": "t10k"}
    if split not in prefix:
        raise DataError(f"unknown split {split!r} for fashion-mnist: expected 'train' or 'test'")
    images_path = FASHION_DIR / f"{prefix[split]}-images-idx3-ubyte.gz"
    _require(images_path, "dataset-fashion-mnist")
    images = torch.from_numpy(_read_idx(images_path).copy())[:, None]
    labels = _read_idx(FASHION_DIR / f"{prefix[split]}-labels-idx1-ubyte.gz").astype(np.int64)
    pad = size - 28
    if pad:
        images = torch.nn.functional.pad(images, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
    if channels == 3:
        images = images.expand(-1, 3, -1, -1).contiguous()
    captions = [FASHION_CLASSES[i] for i in labels]
    return TensorImageDataset(images, labels, captions, list(FASHION_CLASSES), name="fashion-mnist")


# --------------------------------------------------------------------------------------------
# Image folders


class SkipCounter:
    """Counts and reports unreadable samples: a warning per file, never a crash mid-epoch."""

    def __init__(self):
        self.skipped: list[str] = []

    def __call__(self, name: str, error: Exception) -> None:
        self.skipped.append(name)
        warnings.warn(f"skipping unreadable image {name}: {error} ({len(self.skipped)} skipped so far)", stacklevel=3)


class ImageFolderDataset(torch.utils.data.Dataset):
    """Images under a folder; class subfolders become labels, a ``captions.jsonl`` beside the images
    (lines of ``{"file": "relative/path", "caption": "..."}``) gives captions. Unreadable files are
    skipped with a warning (the next readable image stands in for them)."""

    def __init__(self, root: str | Path, size: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist or is not a folder")
        self.files = sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not self.files:
            raise DataError(
                f"image folder {self.root} has no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        relative = [p.relative_to(self.root) for p in self.files]
        self.class_names = sorted({r.parts[0] for r in relative if len(r.parts) > 1})
        self.labels = [self.class_names.index(r.parts[0]) if len(r.parts) > 1 else None for r in relative]
        self.captions = self._read_captions(relative)
        self.size = size
        self.skips = SkipCounter()
        self.name = f"imagefolder:{self.root}"

    def _read_captions(self, relative: list[Path]) -> list[str | None]:
        path = self.root / "captions.jsonl"
        if not path.exists():
            return [None] * len(relative)
        by_file = {}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                by_file[str(Path(row["file"]))] = row["caption"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(
                    f"{path}:{number}: expected a JSON object with 'file' and 'caption', got {line!r}"
                ) from e
        return [by_file.get(str(r)) for r in relative]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.files)

    def load_image(self, index: int) -> torch.Tensor:
        with Image.open(self.files[index]) as image:
            image = to_rgb(image)
            if self.size:
                image = resize_center_crop(image, self.size)
            return pil_to_tensor(image)

    def __getitem__(self, index: int) -> dict:
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            try:
                image = self.load_image(i)
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                self.skips(str(self.files[i]), e)
                continue
            return {"image": image, "label": self.labels[i], "caption": self.captions[i], "path": str(self.files[i])}
        raise DataError(f"no image in {self.root} could be read")


# --------------------------------------------------------------------------------------------
# WebDataset shards


def expand_urls(pattern: str) -> list[str]:
    """``/data/shard-{000..009}.tar`` -> the ten paths (brace expansion, as webdataset does)."""
    import braceexpand

    urls = [u for part in pattern.split("::") for u in braceexpand.braceexpand(part)]
    if not urls:
        raise DataError(f"no shards match {pattern!r}")
    return urls


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _decode_image(data: bytes, size: int | None) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as image:
        image = to_rgb(image)
        if size:
            image = resize_center_crop(image, size)
        return pil_to_tensor(image)


IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")


class ShardDataset(torch.utils.data.IterableDataset):
    """Samples from webdataset shards (``image`` from png/jpg/webp, ``cls``, ``txt``, any ``.npy``).

    One pass visits each sample once across all ranks and workers: shard i goes to rank
    ``i % world`` and, within it, to worker ``(i // world) % workers``. Uneven shard counts give
    some readers fewer samples but never duplicates; a rank with no shard yields nothing instead
    of hanging. ``repeat=True`` loops forever (for step-based training). Corrupt samples are
    skipped with a warning.
    """

    def __init__(self, pattern: str, size: int | None = None, repeat: bool = False,
                 rank: int | None = None, world_size: int | None = None):
        self.urls = expand_urls(pattern)
        self.size = size
        self.repeat = repeat
        self.rank, self.world_size = rank, world_size
        self.skips = SkipCounter()
        self.name = f"webdataset:{pattern}"

    def shards_for_this_reader(self) -> list[str]:
        rank, world = _rank_and_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        mine = self.urls[rank::world]
        return mine[worker::workers]

    def _samples(self, url: str) -> Iterator[dict]:
        import webdataset as wds

        def warn(error):
            self.skips(url, error)
            return True

        pipeline = wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples(handler=warn))
        for sample in pipeline:
            try:
                yield self._convert(sample)
            except (OSError, ValueError, KeyError) as e:
                self.skips(f"{url}:{sample.get('__key__')}", e)

    def _convert(self, sample: dict) -> dict:
        item = {"key": sample["__key__"], "label": None, "caption": None}
        image_key = next((k for k in IMAGE_KEYS if k in sample), None)
        if image_key is not None:
            item["image"] = _decode_image(sample[image_key], self.size)
        if "cls" in sample:
            item["label"] = int(sample["cls"])
        if "txt" in sample:
            item["caption"] = sample["txt"].decode("utf-8")
        for key, value in sample.items():
            if key.endswith(".npy") or key == "npy":
                item[key.removesuffix(".npy")] = torch.from_numpy(np.load(io.BytesIO(value)))
        return item

    def __iter__(self) -> Iterator[dict]:
        shards = self.shards_for_this_reader()
        while True:
            for url in shards:
                yield from self._samples(url)
            if not self.repeat or not shards:
                return


def write_shards(dataset, out_dir: str | Path, prefix: str = "shard", max_count: int = 1000,
                 extra: Callable[[int, dict], dict] | None = None, progress: bool = True) -> list[str]:
    """Write any dataset of dicts into webdataset shards: ``png`` (lossless), ``cls``, ``txt``.

    ``extra(index, item)`` may add entries (e.g. ``{"code.npy": array}``). Keys are the dataset
    indices (``%08d``) so other files can join on them. Returns the shard paths.
    """
    import webdataset as wds
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pattern = str(out_dir / f"{prefix}-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=max_count, verbose=0) as sink:
        for index in tqdm(range(len(dataset)), desc="writing shards", disable=not progress):
            item = dataset[index]
            sample = {"__key__": f"{index:08d}", "png": encode_png(item["image"])}
            if item.get("label") is not None:
                sample["cls"] = item["label"]
            if item.get("caption") is not None:
                sample["txt"] = item["caption"]
            if extra is not None:
                sample.update(extra(index, item))
            sink.write(sample)
    return sorted(str(p) for p in out_dir.glob(f"{prefix}-*.tar"))


def encode_png(image: torch.Tensor) -> bytes:
    """uint8 (C, H, W) tensor -> PNG bytes."""
    array = image.permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# The one entry point

DATASETS = {
    "emoji": "3,655 Noto colour emoji with CLDR names as captions and subgroups as labels",
    "fashion-mnist": "70,000 28x28 clothing images in 10 classes",
    "imagefolder:PATH": "images under PATH; class subfolders become labels; captions.jsonl optional",
    "webdataset:PATTERN": "webdataset shards (png/jpg + cls + txt), e.g. /data/s-{000..099}.tar",
}


def load(name: str, size: int | None = None, split: str = "train", **options):
    """Load a dataset by name (see ``DATASETS``); items are dicts with image, label, caption.

    ``split`` is "train", "test" or "all" for emoji and Fashion-MNIST; for an image folder it
    picks the subfolder of that name when there is one (else all images); a shard pattern names
    its own split."""
    if name == "emoji":
        return load_emoji(size or 32, split, **options)
    if name in ("fashion-mnist", "fashion"):
        return load_fashion_mnist(size or 28, split, **options)
    if name.startswith("imagefolder:"):
        root = Path(name.split(":", 1)[1])
        # ImageNet-style layouts keep splits in subfolders (train/, val/); use one when present
        return ImageFolderDataset(root / split if (root / split).is_dir() else root, size, **options)
    if name.startswith("webdataset:"):
        return ShardDataset(name.split(":", 1)[1], size, **options)  # the pattern names the split
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def collate(items: list[dict]) -> dict:
    """Stack images (and any tensors); keep labels and captions as lists (they may be None)."""
    batch = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif key == "label" and all(v is not None for v in values):
            batch[key] = torch.tensor(values, dtype=torch.long)
        else:
            batch[key] = values
    return batch


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float in [-1, 1], the library's image convention."""
    return images.float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


@dataclass
class DataConfig:
    """The ``data:`` section of a stage config."""

    dataset: str = "emoji"  # emoji, fashion-mnist, imagefolder:PATH, webdataset:PATTERN
    size: int = 32
    channels: int = 3  # fashion-mnist only: 1 (grey) or 3 (repeated for RGB models)

    def load(self, split: str = "train", **options):
        if self.dataset in ("fashion-mnist", "fashion"):
            options.setdefault("channels", self.channels)
        return load(self.dataset, size=self.size, split=split, **options)
