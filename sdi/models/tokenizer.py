"""The CLIP BPE tokenizer, built offline from the vocabulary shipped inside open_clip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from transformers import CLIPTokenizer

from sdi import PLACEHOLDER_TOKEN, PROMPT

N_MERGES = 49152 - 256 - 2  # open_clip's SimpleTokenizer uses exactly these merges.


def clip_bpe_vocab() -> tuple[dict[str, int], list[str]]:
    """Return CLIP's (vocab, merges) as open_clip's SimpleTokenizer builds them.

    vocab has 49,408 entries: 256 byte-unicode characters, the same with ``</w>``,
    one per merge, then ``<|startoftext|>`` and ``<|endoftext|>``.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : N_MERGES + 1]  # line 0 is a header
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_clip_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """Write a Hugging Face CLIP tokenizer (vocab.json, merges.txt, configs) into folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_bpe_vocab()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # Built from the files, as from_pretrained does; transformers 5 ignores the old
    # vocab_file=/merges_file= keywords and would build a 3-token vocabulary.
    tokenizer = CLIPTokenizer(
        vocab=str(folder / "vocab.json"),
        merges=str(folder / "merges.txt"),
        model_max_length=77,
        pad_token="<|endoftext|>",
    )
    if len(tokenizer) != len(vocab):
        raise RuntimeError(f"CLIP tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
    tokenizer.save_pretrained(folder)
    return tokenizer


def placeholder_position(tokenizer: CLIPTokenizer, prompt: str = PROMPT) -> int:
    """Index of the ``class</w>`` token in the tokenized prompt (7 for the method's prompt)."""
    ids = tokenizer(prompt).input_ids
    placeholder_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER_TOKEN)
    if ids.count(placeholder_id) != 1:
        raise ValueError(f"prompt {prompt!r} must contain the word 'class' exactly once")
    return ids.index(placeholder_id)
