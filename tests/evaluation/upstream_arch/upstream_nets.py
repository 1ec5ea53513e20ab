"""Random-initialised checkpoints of the real networks the VBench / VBench-2.0 dimensions load, written where the
harness and upstream's local mode expect them.  Test fixtures only: every score computed from them is a pipeline
check, never a quality number.

Each builder instantiates the architecture from the code that ships with the installed packages (vbench's
``third_party`` RAFT / AMT / UMT / ViCLIP, openai-clip's ``CLIP``, pyiqa's ``MUSIQ``, torchvision's VGG19, DINO's hub
code vendored in ``dino_hub/``, co-tracker's in ``cotracker_hub/``) with its own initialisation under a fixed seed,
and saves it in the layout the upstream loader reads.  Where the loader infers the architecture from the state dict
(CLIP's ``build_model``), the smallest configuration it accepts is used; everything else is the full-size network.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import types
from contextlib import contextmanager
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

# file layout (relative to the roots in evaluation.registry.ROOTS); mirrors evaluation/suites/vbench.py
RAFT_PATH = "raft_model/models/raft-things.pth"
AMT_PATH = "amt_model/amt-s.pth"
CLIP_B32_PATH = "clip_model/ViT-B-32.pt"
CLIP_L14_PATH = "clip_model/ViT-L-14.pt"
AESTHETIC_PATH = "aesthetic_model/emb_reader/sa_0_4_vit_l_14_linear.pth"
MUSIQ_PATH = "pyiqa_model/musiq_spaq_ckpt-358bb6af.pth"
UMT_PATH = "umt_model/l16_ptk710_ftk710_ftk400_f16_res224.pth"
VICLIP_PATH = "ViCLIP/ViClip-InternVid-10M-FLT.pth"
VICLIP_BPE_PATH = "ViCLIP/bpe_simple_vocab_16e6.txt.gz"
DINO_REPO = "dino_model/facebookresearch_dino_main"
DINO_HUB_CKPT = "hub/checkpoints/dino_vitbase16_pretrain.pth"  # under $TORCH_HOME (DINO's hubconf reads it there)
DINO_LOCAL_CKPT = "dino_model/dino_vitbase16_pretrain.pth"  # where upstream's local-mode init_submodules checks
VGG19_PATH = "hub/checkpoints/vgg19-dcbb9e9d.pth"  # under $TORCH_HOME
COTRACKER_REPO = "hub/facebookresearch_co-tracker_main"  # under $TORCH_HOME (torch.hub's cache of the GitHub repo)
COTRACKER2_CKPT = "hub/checkpoints/cotracker2.pth"  # under $TORCH_HOME (the hubconf's load_state_dict_from_url)


@contextmanager
def seeded(seed: int):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _save(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


@contextmanager
def saved_as_cuda():
    """torch.save storages with the location tag 'cuda:0', as a checkpoint saved on a GPU has (RAFT's training
    script saves ``nn.DataParallel(RAFT).cuda()``); loading such a file on a CPU-only machine needs a map_location."""
    import torch.serialization as ser

    real = ser.location_tag
    ser.location_tag = lambda storage: "cuda:0"
    try:
        yield
    finally:
        ser.location_tag = real


def point_vbench_cache(vbench_root: Path) -> None:
    """vbench reads $VBENCH_CACHE_DIR once, at import, into module constants: make already-imported modules agree
    (the harness's worker does the same before every call)."""
    import vbench.utils  # noqa: F401

    from evaluation.upstream_worker import point_cache_dir

    point_cache_dir("vbench", str(vbench_root))


# ---------------------------------------------------------------------------------------------------- VBench v1
def raft(vb: Path, flow_scale: float = 1.0) -> Path:
    """RAFT (things), full size, DataParallel key layout ('module.'), GPU-saved storages.

    A random RAFT predicts flows of ~9 px (at 128 px) whatever the content; ``flow_scale`` scales its flow head's
    last convolution, e.g. 0.2 puts them between the static filter's thresholds for 128 px (1.5) and 256 px (3.0)
    frames, so that frame size decides static / not static and both verdicts occur."""
    from vbench.third_party.RAFT.core.raft import RAFT

    with seeded(0):
        model = RAFT(argparse.Namespace(small=False, mixed_precision=False, alternate_corr=False))
    sd = model.state_dict()
    for k in ("update_block.flow_head.conv2.weight", "update_block.flow_head.conv2.bias"):
        sd[k] = sd[k] * flow_scale
    with saved_as_cuda():
        return _save({"module." + k: v for k, v in sd.items()}, vb / RAFT_PATH)


def amt_s(vb: Path, trainer_state: bool = False) -> Path:
    """AMT-S from vbench's own config, ``{"state_dict": ...}``.  With ``trainer_state``, a training checkpoint that
    also carries non-tensor trainer state, which torch >= 2.6's ``weights_only`` default refuses to unpickle -- what
    upstream's loader needed ``weights_only=False`` for (Vchitect/VBench PR #115)."""
    from omegaconf import OmegaConf

    import vbench
    from vbench.third_party.amt.utils.build_utils import build_from_cfg

    cfg = OmegaConf.load(Path(vbench.__file__).parent / "third_party/amt/cfgs/AMT-S.yaml")
    with seeded(1):
        model = build_from_cfg(cfg.network)
    ckpt = {"state_dict": model.state_dict()}
    if trainer_state:
        ckpt.update(epoch=300, trainer=types.SimpleNamespace(exp_name=str(cfg.exp_name)))
    return _save(ckpt, vb / AMT_PATH)


def _tiny_clip(embed_dim: int, patch: int, seed: int):
    """The smallest ViT CLIP that ``clip.model.build_model`` re-creates from its state dict: 224 px input (vbench's
    transforms), one layer, width 64, the real vocabulary and context length (the tokenizer's)."""
    from clip.model import CLIP

    with seeded(seed):
        model = CLIP(embed_dim, 224, 1, 64, patch, 77, 49408, 64, 1, 1)
    return model.eval()


def _save_clip(model, path: Path) -> Path:
    """Saved as a TorchScript archive, like OpenAI's files (clip.load reads the state dict of the archive)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = torch.zeros(1, 3, 224, 224)
    text = torch.zeros(1, 77, dtype=torch.long)
    with torch.no_grad():
        traced = torch.jit.trace(model, (image, text), check_trace=False)
    tmp = path.with_suffix(".tmp")
    traced.save(str(tmp))
    os.replace(tmp, path)
    return path


def clip_b32(vb: Path) -> Path:
    return _save_clip(_tiny_clip(512, 32, 2), vb / CLIP_B32_PATH)


def clip_l14(vb: Path) -> Path:
    """768-d embedding (the LAION aesthetic head's input), patch 14."""
    return _save_clip(_tiny_clip(768, 14, 3), vb / CLIP_L14_PATH)


def aesthetic_head(vb: Path) -> Path:
    with seeded(4):
        head = torch.nn.Linear(768, 1)
    return _save(head.state_dict(), vb / AESTHETIC_PATH)


def musiq(vb: Path) -> Path:
    """pyiqa's MUSIQ with the SPAQ head (one output), full size."""
    from pyiqa.archs.musiq_arch import MUSIQ

    with seeded(5):
        model = MUSIQ(pretrained=False)
    return _save(model.state_dict(), vb / MUSIQ_PATH)


def umt(vb: Path, boost_labels: tuple[str, ...] = ()) -> Path:
    """UMT ViT-L/16 (vbench's modeling_finetune, the Kinetics-400 head), full size.  Its initialisation scales the
    head by 0.001, so every sigmoid is ~0.5 (< upstream's 0.85 cut) and no video could ever count as correct; the
    head bias of ``boost_labels`` (Kinetics-400 names) is set to +8, so videos named after them are recognised and
    the label parsing from the file name is exercised both ways."""
    import vbench
    from timm.models import create_model

    import vbench.third_party.umt.models.modeling_finetune  # noqa: F401  (registers vit_large_patch16_224)

    with seeded(6):
        model = create_model("vit_large_patch16_224", pretrained=False, num_classes=400, all_frames=16,
                             tubelet_size=1, use_learnable_pos_emb=False, fc_drop_rate=0., drop_rate=0.,
                             drop_path_rate=0.2, attn_drop_rate=0., drop_block_rate=None, use_checkpoint=False,
                             checkpoint_num=16, use_mean_pooling=True, init_scale=0.001)
    sd = model.state_dict()
    if boost_labels:
        cats = {}
        for line in (Path(vbench.__file__).parent / "third_party/umt/kinetics_400_categories.txt").read_text().splitlines():
            if line.strip():
                name, idx = line.strip().split("\t")
                cats[name.lower()] = int(idx)
        for label in boost_labels:
            sd["head.bias"][cats[label]] = 8.0
    return _save(sd, vb / UMT_PATH)


def viclip_vocab(vb: Path) -> Path:
    """ViCLIP's BPE vocabulary == the file inside the openai-clip package."""
    import clip

    dst = vb / VICLIP_BPE_PATH
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz", dst)
    with gzip.open(dst) as fh:  # a valid gzip, not an LFS pointer
        fh.read(16)
    return dst


def viclip(vb: Path) -> Path:
    """ViCLIP-L/14 (vision + text towers), full size, under the ``model`` key as upstream loads it."""
    viclip_vocab(vb)
    point_vbench_cache(vb)  # simple_tokenizer resolves its default vocabulary from vbench.utils.CACHE_DIR at import
    from vbench.third_party.ViCLIP.simple_tokenizer import SimpleTokenizer
    from vbench.third_party.ViCLIP.viclip import ViCLIP

    point_vbench_cache(vb)  # ... and the text tower builds a tokenizer with that default

    with seeded(7):
        model = ViCLIP(tokenizer=SimpleTokenizer(str(vb / VICLIP_BPE_PATH)), pretrain=None)
        # three parameters are torch.empty in vbench's ViCLIP (it always loads them): OpenAI CLIP's initialisation
        text, vision = model.text_encoder, model.vision_encoder
        torch.nn.init.normal_(text.positional_embedding, std=0.01)
        torch.nn.init.normal_(text.text_projection, std=text.text_projection.shape[0] ** -0.5)
        torch.nn.init.normal_(vision.proj, std=vision.proj.shape[0] ** -0.5)
    sd = model.state_dict()
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    assert not bad, f"uninitialised ViCLIP parameters: {bad}"
    return _save({"model": sd}, vb / VICLIP_PATH)


def dino(vb: Path, torch_home: Path) -> Path:
    """DINO ViT-B/16 from the vendored hub code; the checkpoint goes to the torch-hub cache (where DINO's hubconf
    loads it) and is linked where upstream's local mode checks for it."""
    repo = vb / DINO_REPO
    if not repo.is_dir():
        shutil.copytree(HERE / "dino_hub", repo, ignore=shutil.ignore_patterns("__pycache__"))
    import importlib.util

    spec = importlib.util.spec_from_file_location("_dino_vit_fixture", HERE / "dino_hub" / "vision_transformer.py")
    # vision_transformer.py does `from utils import trunc_normal_`: give it the hub folder's utils for this import
    import sys

    saved = sys.modules.pop("utils", None)
    sys.path.insert(0, str(HERE / "dino_hub"))
    try:
        vits = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(vits)
        with seeded(8):
            model = vits.vit_base(patch_size=16, num_classes=0)
    finally:
        sys.path.remove(str(HERE / "dino_hub"))
        sys.modules.pop("utils", None)
        if saved is not None:
            sys.modules["utils"] = saved
    ckpt = _save(model.state_dict(), torch_home / DINO_HUB_CKPT)
    local = vb / DINO_LOCAL_CKPT
    local.parent.mkdir(parents=True, exist_ok=True)
    if not local.exists():
        os.link(ckpt, local)
    return ckpt


# ---------------------------------------------------------------------------------------------------- VBench-2.0
def vgg19(torch_home: Path) -> Path:
    """torchvision VGG19 (ImageNet head), full size, in the torch-hub cache under torchvision's file name."""
    from torchvision.models import vgg19 as build

    with seeded(9):
        model = build(weights=None)
    return _save(model.state_dict(), torch_home / VGG19_PATH)


def cotracker2(torch_home: Path) -> Path:
    """CoTracker2 (stride 4, window 8: what the hubconf's ``cotracker2`` builds), full size, from the vendored hub code
    copied to where torch.hub caches the GitHub repo; the state dict goes where the hubconf loads it from.

    The two coordinate rows of its flow head (the update transformer's last linear layer: per-iteration track
    deltas, then feature deltas) are zeroed, so tracks stay exactly on their grid points and upstream classifies the
    camera as "static" whatever the video; a random tracker's sub-pixel deltas, which upstream truncates to whole
    pixels, give a class that depends on rounding (e.g. "pan_left"), so which label matches would be chance.
    Everything else (features, correlations, transformer, feature updates, visibility) runs as initialised."""
    import sys

    repo = torch_home / COTRACKER_REPO
    if not repo.is_dir():
        shutil.copytree(HERE / "cotracker_hub", repo, ignore=shutil.ignore_patterns("__pycache__"))
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k.split(".")[0] == "cotracker"}
    sys.path.insert(0, str(HERE / "cotracker_hub"))
    try:
        from cotracker.models.core.cotracker.cotracker import CoTracker2

        with seeded(10):
            model = CoTracker2(stride=4, window_len=8)
    finally:
        sys.path.remove(str(HERE / "cotracker_hub"))
        for k in [k for k in sys.modules if k.split(".")[0] == "cotracker"]:
            del sys.modules[k]  # torch.hub imports the package from the cached repo
        sys.modules.update(saved)
    sd = model.state_dict()
    for k in ("updateformer.flow_head.weight", "updateformer.flow_head.bias"):
        sd[k][:2] = 0.0  # output = [delta x, delta y, delta features...] (cotracker.py: delta[..., :2])
    return _save(sd, torch_home / COTRACKER2_CKPT)
