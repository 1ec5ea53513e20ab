"""What a suite gets when it runs: the store, the parsed options, provenance helpers and progress bars."""
from __future__ import annotations

import argparse
import importlib.metadata
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from evaluation.store import ResultsStore
from evaluation.weights import HashCache

PROVENANCE_PACKAGES = ("torch", "torchvision", "diffusers", "transformers", "numpy", "opencv-python-headless",
                       "opencv-python", "decord", "scikit-image", "av", "vbench", "vbench2", "rehyat")


def package_versions(names: Iterable[str] = PROVENANCE_PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class RunContext:
    store: ResultsStore
    args: argparse.Namespace
    out_dir: Path
    device: str = "cpu"
    quiet: bool = False
    hash_cache: HashCache | None = None
    versions: dict = field(default_factory=package_versions)
    explicit_dimensions: bool = False

    @property
    def run_id(self) -> str:
        return self.store.run_id

    def provenance(self, **extra) -> dict:
        prov = {"versions": self.versions, "device": self.device}
        prov.update({k: v for k, v in extra.items() if v is not None})
        return prov

    def progress(self, iterable, desc: str = "", total: int | None = None):
        if self.quiet:
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, file=sys.stderr, dynamic_ncols=True)

    def log(self, msg: str) -> None:
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)

    def work_dir(self, *parts: str) -> Path:
        p = self.out_dir.joinpath("work", *parts)
        p.mkdir(parents=True, exist_ok=True)
        return p
