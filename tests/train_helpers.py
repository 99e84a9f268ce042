"""Tiny corpora, tokenizers and llama checkpoints for the train/experiment tests."""

from __future__ import annotations

import random
from pathlib import Path

import torch

WORDS = ("def return self import class value result data list item None True False for in if else while "
         "print append index count total lambda yield").split()


def make_corpus(folder: Path, n_files: int = 6, lines: int = 300, seed: int = 0) -> Path:
    """Python-ish text with learnable structure, as several .py files in folder."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        body = []
        for _ in range(lines):
            name = rng.choice(WORDS[4:12])
            body.append(f"def {name}_{rng.randint(0, 9)}(self, {rng.choice(WORDS)}):\n"
                        f"    return self.{rng.choice(WORDS)} + {rng.randint(0, 99)}\n")
        (folder / f"mod{i}.py").write_text("".join(body))
    return folder


def make_tokenizer(folder: Path, corpus: Path, vocab: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train([str(p) for p in sorted(corpus.glob("*.py"))],
              trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def make_model(folder: Path, corpus: Path, vocab: int = 320, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A tiny llama with default (HF) initialisation and a tokenizer, as a plain checkpoint folder."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    make_tokenizer(folder, corpus, vocab)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=2, head_dim=hidden // 2,
                         max_position_embeddings=128, eos_token_id=0, pad_token_id=0, bos_token_id=0)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder
