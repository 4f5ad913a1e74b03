"""A tiny Parakeet-family model built here (no model hub): the stand-in for NeMo's Parakeet in tests.

The real family's architecture (FastConformer encoder with 8x depthwise-striding
subsampling, RNNT decoder and joint with TDT durations) at tiny sizes and with
RANDOM weights, saved as a `.nemo` that `ASRModel.restore_from` opens as it
opens a downloaded Parakeet.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from . import MARKER, preparer

TINY_PARAKEET = "parakeet-tdt-tiny"
SAMPLE_RATE = 16000

_TINY_WORDS = ("harbor lights are shining carry me back home tonight the river knows my name and "
               "morning brings music song sing along with love night day heart").split()


# Sizes: the tiny stand-in, and Parakeet TDT 0.6B's own (FastConformer XL: 24 layers of 1024, 8 heads,
# 256 subsampling channels, a 640-wide prediction net and joint, 1024 tokens) for GPU rehearsals.
TINY = {"d_model": 64, "layers": 2, "heads": 2, "conv_channels": 32, "pred": 64, "vocab": 64, "ff": 2, "spread": 4.0}
FULL_0_6B = {"d_model": 1024, "layers": 24, "heads": 8, "conv_channels": 256, "pred": 640, "vocab": 1024, "ff": 4,
             "spread": 1.0}


def build_tiny_parakeet(path: Path, *, seed: int = 0, sizes: dict | None = None) -> Path:
    """Write a RANDOM-WEIGHT Parakeet-family model (FastConformer encoder, TDT decoder) as a `.nemo`.

    SentencePiece BPE tokenizer trained here; by default 2 encoder layers of width 64 with 8x
    depthwise-striding subsampling (80 ms per step, like Parakeet); RNNT decoder and joint
    with 5 TDT durations (`sizes=FULL_0_6B`: the 0.6B model's sizes). Its transcripts are
    noise, its timestamps real model output.
    """
    sizes = {**TINY, **(sizes or {})}
    import tempfile

    import sentencepiece as spm
    import torch
    from nemo.utils import logging as nemo_logging
    from omegaconf import OmegaConf

    nemo_logging.setLevel(logging.ERROR)
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tok = Path(tmp)
        words = _TINY_WORDS if sizes["vocab"] <= 64 else \
            ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz"), rng.integers(3, 9))) for _ in range(5000)]
        lines = 400 if sizes["vocab"] <= 64 else 4000
        (tok / "text.txt").write_text("\n".join(" ".join(rng.choice(words, 10)) for _ in range(lines)))
        spm.SentencePieceTrainer.train(input=str(tok / "text.txt"), model_prefix=str(tok / "tokenizer"),
                                       vocab_size=sizes["vocab"], model_type="bpe", bos_id=-1, eos_id=-1,
                                       character_coverage=1.0, minloglevel=2)
        sp = spm.SentencePieceProcessor(model_file=str(tok / "tokenizer.model"))
        (tok / "vocab.txt").write_text("\n".join(sp.id_to_piece(i) for i in range(sp.get_piece_size())) + "\n")
        torch.manual_seed(seed)
        model = EncDecRNNTBPEModel(cfg=OmegaConf.create(_tiny_parakeet_config(str(tok), sizes)), trainer=None)
        with torch.no_grad():  # a wider spread than the usual init: many short (noise) words, not one long one
            for module in (model.encoder, model.decoder, model.joint):
                for param in module.parameters():
                    if param.dim() >= 2:
                        param.mul_(sizes["spread"])
        model.save_to(str(path))
    Path(f"{path}.{MARKER}").write_text(json.dumps({
        "name": TINY_PARAKEET, "random_weights": True, "seed": seed,
        "about": "tiny Parakeet-family TDT model with RANDOM weights built by mfpipe: its text is noise",
    }, indent=2))
    return path


def _tiny_parakeet_config(tokenizer_dir: str, sizes: dict) -> dict:
    d, pred = sizes["d_model"], sizes["pred"]
    durations = [0, 1, 2, 3, 4]
    return {
        "sample_rate": SAMPLE_RATE,
        "tokenizer": {"dir": tokenizer_dir, "type": "bpe"},
        "model_defaults": {"enc_hidden": d, "pred_hidden": pred, "joint_hidden": pred, "tdt_durations": durations,
                           "num_tdt_durations": len(durations)},
        "preprocessor": {"_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
                         "sample_rate": SAMPLE_RATE, "normalize": "per_feature", "window_size": 0.025,
                         "window_stride": 0.01, "window": "hann", "features": 80, "n_fft": 512, "log": True,
                         "frame_splicing": 1, "dither": 0.0, "pad_to": 0, "pad_value": 0.0},
        "encoder": {"_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "feat_out": -1,
                    "n_layers": sizes["layers"], "d_model": d, "subsampling": "dw_striding", "subsampling_factor": 8,
                    "subsampling_conv_channels": sizes["conv_channels"], "causal_downsampling": False,
                    "ff_expansion_factor": sizes["ff"], "self_attention_model": "rel_pos", "n_heads": sizes["heads"],
                    "att_context_size": [-1, -1],
                    "xscaling": True, "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9,
                    "conv_norm_type": "batch_norm", "dropout": 0.0, "dropout_pre_encoder": 0.0,
                    "dropout_emb": 0.0, "dropout_att": 0.0},
        "decoder": {"_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
                    "random_state_sampling": False, "blank_as_pad": True,
                    "prednet": {"pred_hidden": pred, "pred_rnn_layers": 1, "t_max": None, "dropout": 0.0}},
        "joint": {"_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
                  "preserve_memory": False, "fuse_loss_wer": False, "fused_batch_size": 4,
                  "num_extra_outputs": len(durations),
                  "jointnet": {"joint_hidden": pred, "activation": "relu", "dropout": 0.0}},
        "decoding": {"strategy": "greedy_batch", "model_type": "tdt", "durations": durations,
                     "greedy": {"max_symbols": 10}},
        "loss": {"loss_name": "tdt", "tdt_kwargs": {"fastemit_lambda": 0.0, "clamp": -1.0, "durations": durations,
                                                    "sigma": 0.02, "omega": 0.1}},
        # transcribe() needs a validation_ds block to build its dataloader from.
        "validation_ds": {"manifest_filepath": None, "sample_rate": SAMPLE_RATE, "batch_size": 4, "shuffle": False,
                          "use_start_end_token": False},
        "optim": {"name": "adamw", "lr": 1e-3},
    }


@preparer(TINY_PARAKEET, profiles=())
def prepare_tiny_parakeet(root: Path) -> Path:
    """Tiny random-weight Parakeet-family .nemo (only with --only; tests build their own); text is noise."""
    folder = root / TINY_PARAKEET
    path = folder / f"{TINY_PARAKEET}.nemo"
    if not (path.is_file() and (folder / MARKER).is_file()):
        build_tiny_parakeet(path)
        (folder / MARKER).write_text(Path(f"{path}.{MARKER}").read_text())
    return folder
