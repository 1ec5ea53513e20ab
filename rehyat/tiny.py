"""A built-in tiny random Wan2.1 text-to-video model: the offline default for demos and tests.

Everything is built in code from fixed configs and a seed — no hub access, no files shipped:

* transformer: diffusers' own ``WanTransformer3DModel`` pipeline-test config (2 blocks, 2 heads x 12, text dim 32),
  except ``rope_max_seq_len=1024`` (the class default) so long videos work;
* VAE: diffusers' ``AutoencoderKLWan`` pipeline-test config (``base_dim=3``, ``z_dim=16``, 4x temporal / 8x spatial);
* text encoder: a random ``UMT5EncoderModel`` (Wan's class; d_model 32) with a **real tokenizer built in code**: a
  byte-level ``tokenizers`` model (256 byte tokens + ``<pad>``, ``</s>``, ``<unk>``) wrapped in
  ``PreTrainedTokenizerFast``.  Chosen over precomputed prompt embeddings so that the tiny model runs the real ``WanPipeline`` prompt path
  (tokenizer, encoder, negative prompt, CFG) and different prompts give different videos;
* scheduler: ``UniPCMultistepScheduler`` in flow-matching mode with ``flow_shift=3.0``, as Wan2.1 480p uses.

:func:`tiny_model_dir` writes the pipeline with ``save_pretrained`` (plus a ReHyAt checkpoint of a fully converted
causal transformer in ``<dir>/rehyat``) once into a cache folder; :func:`build_tiny_pipeline` loads it back through
:func:`rehyat.wan.pipeline.load_pipeline`, the same code that loads a real Wan folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY_VERSION = 1
CACHE_ENV = "REHYAT_CACHE"

TINY_TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16, text_dim=32,
    freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    rope_max_seq_len=1024,
)
TINY_VAE_CONFIG = dict(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                       temperal_downsample=[False, True, True])
TINY_T5_CONFIG = dict(d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
TINY_SCHEDULER_CONFIG = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                             num_train_timesteps=1000)
# The ReHyAt checkpoint stored with the tiny model: every block, causal (so recurrent mode works), ragged chunks.
TINY_REHYAT = dict(blocks="all", chunk_frames=2, overlap_frames=1, causal=True, feature_map="polynomial",
                   feature_map_kwargs={"hidden_dim": 16, "feature_dim": 16})
# Small defaults for demos: 17 frames -> 5 latent frames -> chunks of 2, 2, 1.
TINY_DEFAULTS = dict(num_frames=17, height=32, width=32, num_inference_steps=2, guidance_scale=5.0,
                     max_sequence_length=32)
_SPECIALS = ("<pad>", "</s>", "<unk>")


def build_byte_tokenizer():
    """A T5-style byte-level tokenizer without files: ids 0-2 = <pad>, </s>, <unk>; 3..258 = bytes; appends </s>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(_SPECIALS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def build_tiny_components(seed: int = 0) -> dict:
    """Fresh random components of the tiny Wan pipeline (deterministic in ``seed``; the global RNG is untouched)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_byte_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = WanTransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
        vae = AutoencoderKLWan(**TINY_VAE_CONFIG).eval()
        t5 = UMT5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                      **TINY_T5_CONFIG)
        text_encoder = UMT5EncoderModel(t5).eval()
    scheduler = UniPCMultistepScheduler(**TINY_SCHEDULER_CONFIG)
    return dict(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)


def save_tiny_model(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny base pipeline (``save_pretrained``) to ``path`` and its ReHyAt checkpoint to ``path/rehyat``."""
    from diffusers import WanPipeline

    from rehyat.wan.checkpoint import save_rehyat
    from rehyat.wan.convert import convert_wan_to_rehyat

    path = Path(path)
    comps = build_tiny_components(seed)
    WanPipeline(**comps).save_pretrained(path, safe_serialization=True)
    transformer = comps["transformer"]
    kw = dict(TINY_REHYAT)
    convert_wan_to_rehyat(transformer, kw.pop("blocks"), seed=seed + 1, **kw)
    save_rehyat(transformer, path / "rehyat", base_model="..")
    return path


def tiny_model_dir(seed: int = 0, root: str | os.PathLike | None = None) -> Path:
    """The cached tiny model folder (``$REHYAT_CACHE`` or ``~/.cache/rehyat``), written on first use (atomically)."""
    root = Path(root or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rehyat").expanduser()
    final = root / f"tiny-wan-v{TINY_VERSION}-seed{seed}"
    if (final / ".complete").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=root))
    try:
        save_tiny_model(tmp, seed)
        (tmp / ".complete").write_text("ok\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race (or a stale incomplete folder is in the way)
            if not (final / ".complete").is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_tiny_pipeline(seed: int = 0, *, rehyat: bool = True, mode: str = "parallel",
                        root: str | os.PathLike | None = None, device: str | torch.device | None = "cpu"):
    """The tiny ``WanPipeline``: ReHyAt transformer (``rehyat=True``, all blocks, causal, T_c=2, T_o=1) or the plain
    softmax one, loaded from its saved folder through :func:`rehyat.wan.pipeline.load_pipeline`."""
    from rehyat.wan.pipeline import load_pipeline

    folder = tiny_model_dir(seed, root)
    return load_pipeline(folder / "rehyat" if rehyat else folder, mode=mode, device=device)
