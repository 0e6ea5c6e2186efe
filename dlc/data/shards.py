"""Webdataset shards: the one reader and the one writer every stage uses.

A shard is a tar of samples keyed by dataset index (``%08d``): ``png`` (lossless), ``cls``,
``txt`` and any ``NAME.npy`` entries (``code.npy``, ``latent.npy``, their ``_flip`` twins).
``dlc data shards`` and ``dlc encode --shards`` both write through ``write_shards``, which keeps
the settings and the samples per shard in ``encode.json`` beside the shards.
"""

from __future__ import annotations

import io
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError, DLCError
from ..files import atomic_write
from ..progress import tqdm
from .folder import SkipCounter
from .images import collate, decode_image, encode_png

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
MANIFEST = "encode.json"


def expand_urls(pattern: str) -> list[str]:
    """``/data/shard-{000..009}.tar`` -> the ten paths (brace expansion, as webdataset does)."""
    import braceexpand

    urls = [u for part in pattern.split("::") for u in braceexpand.braceexpand(part)]
    if not urls:
        raise DataError(f"no shards match {pattern!r}")
    return urls


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of this process: torch.distributed's, else torchrun's environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def read_manifest(shard: str | Path) -> dict | None:
    """The ``encode.json`` beside a shard written by ``write_shards`` (None if there is none)."""
    path = Path(shard).parent / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def describe_source(name_or_path: str) -> str:
    """A hub name as it is, a local folder as an absolute path (so a re-run from elsewhere matches)."""
    path = Path(name_or_path)
    return str(path.resolve()) if path.exists() else name_or_path


def npy_entry(raw: dict, name: str) -> np.ndarray:
    """The array stored as ``NAME.npy`` in a raw sample."""
    return np.load(io.BytesIO(raw[name]))


class ShardDataset(torch.utils.data.IterableDataset):
    """Samples from webdataset shards, split across ranks and data-loader workers.

    Shard i goes to rank ``i % world`` and, within it, to worker ``(i // world) % workers``: one
    pass visits each sample once across all readers. Items are dicts (``key``, ``image`` from
    png/jpg/webp, ``label`` from ``cls``, ``caption`` from ``txt``, and every ``NAME.npy`` as
    ``NAME``) unless ``decode(raw, flip)`` makes them instead.

    ``repeat`` loops forever (step-based training; then every reader needs a shard of its own).
    ``shuffle_buffer`` > 0 visits the shards in a shuffled order each epoch and passes the samples
    through a shuffle buffer of that size; ``hflip`` flips each sample with probability 1/2. Both
    are drawn from (seed, epoch, rank, worker) alone, so ``set_start(step, local_batch)`` (called
    by ``dlc.training.fit`` on resume) continues the stream where an interrupted run left it.
    Unreadable samples are skipped with a warning.
    """

    def __init__(self, pattern: str, size: int | None = None, channels: int | None = None, repeat: bool = False,
                 shuffle_buffer: int = 0, seed: int = 0, hflip: bool = False,
                 decode: Callable[[dict, bool], dict] | None = None,
                 rank: int | None = None, world_size: int | None = None):
        self.urls = expand_urls(pattern)
        self.pattern, self.size, self.channels, self.repeat = pattern, size, channels, repeat
        self.shuffle_buffer, self.seed, self.hflip, self.decode = shuffle_buffer, seed, hflip, decode
        self.rank, self.world_size = rank, world_size
        self.start_step, self.local_batch = 0, 0
        self.skips = SkipCounter()
        self.name = f"webdataset:{pattern}"

    def set_start(self, step: int, local_batch: int) -> None:
        """Start the stream after ``step`` batches of ``local_batch`` items per process."""
        self.start_step, self.local_batch = step, local_batch

    # raw samples -------------------------------------------------------------------------
    def raw_samples(self, url: str) -> Iterator[dict]:
        """The undecoded samples of one shard, in order."""
        import webdataset as wds

        def warn(error):
            self.skips(url, error)
            return True

        yield from wds.DataPipeline(wds.SimpleShardList([url]), wds.tarfile_to_samples(handler=warn))

    def first_samples(self, n: int) -> list[dict]:
        """The first ``n`` raw samples in shard order (no shuffling): for checks and references."""
        return list(itertools.islice(itertools.chain.from_iterable(map(self.raw_samples, self.urls)), n))

    def reader_shards(self) -> tuple[list[str], tuple[int, int, int]]:
        """(this reader's shards, (rank, worker, workers))."""
        rank, world = rank_and_world()
        rank = self.rank if self.rank is not None else rank
        world = self.world_size if self.world_size is not None else world
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        shards = self.urls[rank::world][worker::workers]
        if not shards and self.repeat:
            raise DataError(f"{len(self.urls)} shard(s) for {world} process(es) x {workers} data worker(s): every "
                            "reader needs a shard of its own. Write more, smaller shards (dlc encode --chunk) or "
                            "lower train.num_workers")
        return shards, (rank, worker, workers)

    def epoch_samples(self, shards: list[str], epoch: int, rank: int, worker: int) -> Iterator[tuple[dict, bool]]:
        """(raw sample, flip) pairs of one pass over ``shards``, shuffled when ``shuffle_buffer`` > 0."""
        rng = np.random.default_rng([self.seed, epoch, rank, worker])

        def out(raw):
            return raw, bool(self.hflip and rng.random() < 0.5)

        if not self.shuffle_buffer:
            for url in shards:
                yield from map(out, self.raw_samples(url))
            return
        buffer = []
        for i in rng.permutation(len(shards)):
            for raw in self.raw_samples(shards[i]):
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(raw)
                    continue
                j = int(rng.integers(len(buffer)))
                buffer[j], raw = raw, buffer[j]
                yield out(raw)
        for j in rng.permutation(len(buffer)):
            yield out(buffer[j])

    def epoch_length(self, shards: list[str]) -> int:
        """Samples in one pass over ``shards`` (from ``encode.json`` where it counts them)."""
        manifest = read_manifest(shards[0]) or {}
        counts = dict(zip(manifest.get("shards", []), manifest.get("samples_per_shard", [])))
        return sum(counts[Path(url).name] if Path(url).name in counts else sum(1 for _ in self.raw_samples(url))
                   for url in shards)

    # items -------------------------------------------------------------------------------
    def convert(self, raw: dict, flip: bool = False) -> dict:
        """A raw sample -> an item (``decode`` when given)."""
        if self.decode is not None:
            return self.decode(raw, flip)
        item = {"key": raw["__key__"], "label": None, "caption": None}
        image_key = next((k for k in IMAGE_KEYS if k in raw), None)
        if image_key is not None:
            image = decode_image(raw[image_key], self.size, self.channels)
            item["image"] = image.flip(-1) if flip else image
        if "cls" in raw:
            item["label"] = int(raw["cls"])
        if "txt" in raw:
            item["caption"] = raw["txt"].decode("utf-8")
        for key in raw:
            if key.endswith(".npy") or key == "npy":
                item[key.removesuffix(".npy")] = torch.from_numpy(npy_entry(raw, key))
        return item

    def __iter__(self) -> Iterator[dict]:
        shards, (rank, worker, workers) = self.reader_shards()
        if not shards:
            return
        # the DataLoader takes batches from its workers in turn: worker w made batches w, w+W, ...
        skip = len(range(worker, self.start_step, workers)) * self.local_batch
        epoch = 0
        if skip:
            length = self.epoch_length(shards)
            if not length:
                raise DataError(f"the shards {shards} hold no samples")
            epoch, skip = divmod(skip, length)
        while True:
            seen = 0
            for k, (raw, flip) in enumerate(self.epoch_samples(shards, epoch, rank, worker)):
                seen += 1
                if k < skip:
                    continue
                try:
                    item = self.convert(raw, flip)
                except DLCError:  # wrong data (a code out of range), not a damaged file: say so
                    raise
                except (OSError, ValueError, KeyError) as e:
                    self.skips(f"{raw.get('__url__')}:{raw.get('__key__')}", e)
                    continue
                yield item
            if not self.repeat:
                return
            if not seen:
                raise DataError(f"the shards {shards} hold no readable samples")
            skip, epoch = 0, epoch + 1


# --------------------------------------------------------------------------------------------
# Writing


def chunk_ranges(dataset, chunk: int) -> list[range]:
    try:
        n = len(dataset)
    except TypeError as e:
        raise DataError("writing shards needs a dataset with a length (emoji, fashion-mnist, imagefolder:...)") from e
    return [range(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def batches(dataset, rows: range, batch_size: int) -> Iterator[dict]:
    """Collated batches of ``dataset[rows]``, in order."""
    for s in range(rows.start, rows.stop, batch_size):
        yield collate([dataset[i] for i in range(s, min(s + batch_size, rows.stop))])


def _check_manifest(out_dir: Path, manifest: dict) -> None:
    """Write ``encode.json``; if one is there, the settings must match (resume, don't mix)."""
    path = out_dir / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        changed = sorted(k for k in manifest if old.get(k) != manifest[k])
        if changed:
            raise DataError(f"{out_dir} holds shards written with other settings ({', '.join(changed)}: "
                            f"{[old.get(k) for k in changed]} then, {[manifest[k] for k in changed]} now); "
                            "use a new folder or delete this one")
        return
    with atomic_write(path) as partial:
        partial.write_text(json.dumps(manifest, indent=1))


def _sample(index: int, image: torch.Tensor, label, caption, png: bool) -> dict:
    sample = {"__key__": f"{index:08d}"}
    if png:
        sample["png"] = encode_png(image)
    if label is not None:
        sample["cls"] = int(label)
    if caption is not None:
        sample["txt"] = caption
    return sample


def write_shards(dataset, out_dir: str | Path, entries: dict[str, Callable] | None = None, chunk: int = 1000,
                 batch_size: int = 256, png: bool = True, manifest: dict | None = None,
                 progress: bool = True) -> list[Path]:
    """Write a dataset of dicts into shards ``shard-%06d.tar`` of ``chunk`` samples each.

    Each sample holds ``png`` (unless ``png=False``), ``cls``, ``txt`` and, for every name in
    ``entries``, ``entries[name](images)`` (a function of a batch of uint8 images (B, C, H, W)
    giving one array per sample, e.g. ``code.npy``). A finished shard is written under a temporary
    name and renamed, so an interrupted run keeps it and a re-run continues after it; ``manifest``
    (the settings, which a re-run must repeat) goes to ``encode.json`` with the samples per shard.
    """
    import webdataset as wds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = entries or {}
    chunks = chunk_ranges(dataset, chunk)
    _check_manifest(out_dir, {**(manifest or {}), "chunk": chunk, "png": png, "entries": sorted(entries),
                              "shards": [f"shard-{k:06d}.tar" for k in range(len(chunks))],
                              "samples_per_shard": [len(rows) for rows in chunks]})
    paths = []
    with tqdm(total=len(dataset), desc="writing shards", unit="img", dynamic_ncols=True, disable=not progress) as bar:
        for k, rows in enumerate(chunks):
            path = out_dir / f"shard-{k:06d}.tar"
            paths.append(path)
            if path.exists():
                bar.update(len(rows))
                continue
            with atomic_write(path) as partial, wds.TarWriter(str(partial)) as sink:
                index = rows.start
                for batch in batches(dataset, rows, batch_size):
                    arrays = {name: make(batch["image"]) for name, make in entries.items()}
                    for j, image in enumerate(batch["image"]):
                        sample = _sample(index, image, batch["label"][j], batch["caption"][j], png)
                        sink.write({**sample, **{name: values[j] for name, values in arrays.items()}})
                        index += 1
                    bar.update(len(batch["image"]))
    return paths
