"""Our byte-level BPE against SentencePiece BPE on the same stdlib corpus: training time, encoding speed, compression.

Both train on the first 1 MiB of the Python standard library's source (`stdlib_corpus`) with vocabulary size 2048
(256 bytes + merges; SentencePiece gets as many ordinary pieces) and encode the next 1 MiB. One thread for both
(OMP/torch threads and SentencePiece's `num_threads`); each figure is the best of 3 runs; encoding starts from a
fresh tokenizer (cold chunk cache).

One long word: the corpus's ASCII letters with everything else removed, cut at 1 MiB, which the split pattern keeps
as a single chunk. The merge heap (`encode_chunk_heap`, through `encode`) encodes all of it; the simple loop
(`encode_chunk_simple`, n x merges) only its first 20 kB, beside the heap on the same 20 kB, and both must give the
same tokens. Floors: training within 20x SentencePiece, encoding at least 1 MB/s, compression within 5%, and the
1 MiB word in at most 3 s. The result records the git commit it ran at (and whether the working tree had
changes) beside its config and thread count. Prints one JSON object on its last line and writes it to
wakea_edu/data/bench/tokenizer.json.
"""
import os

THREADS = 1
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("WAKEA_QUIET", "1")

import hashlib
import json
import platform
import re
import time
from pathlib import Path

import torch

from wakea_edu.core import atomic_write, source_changed, source_commit
from wakea_edu.text.tokenizer import (BPETokenizer, SentencePieceTokenizer, bytes_per_token, encode_chunk_heap,
                                      encode_chunk_simple, stdlib_corpus)

CORPUS_BYTES, VOCAB_SIZE, REPEATS = 2**20, 2048, 3
LONG_WORD_BYTES, SHORT_WORD_BYTES = 2**20, 20_000
RESULTS = Path(__file__).resolve().parents[1] / "wakea_edu" / "data" / "bench" / "tokenizer.json"  # shipped: chapters show it installed


def best_of(fn, repeats=REPEATS):
    "(fastest wall time in seconds, last result) over `repeats` calls of `fn`."
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def long_word(n_bytes: int) -> bytes:
    "`n_bytes` of ASCII letters: the stdlib corpus with everything else removed (one chunk under the split pattern)."
    size = 2 * n_bytes
    while len(letters := re.sub(rb"[^A-Za-z]+", b"", stdlib_corpus(size))) < n_bytes: size *= 2
    return letters[:n_bytes]


def main():
    torch.set_num_threads(THREADS)
    train_data, heldout = stdlib_corpus(CORPUS_BYTES), stdlib_corpus(CORPUS_BYTES, offset=CORPUS_BYTES)
    train_s_ours, ours = best_of(lambda: BPETokenizer.train(train_data, VOCAB_SIZE))
    train_s_sp, sp = best_of(lambda: SentencePieceTokenizer.train(train_data, VOCAB_SIZE, num_threads=THREADS))
    encode_s_ours, _ = best_of(lambda: BPETokenizer(ours.merges, ours.pattern, ours.special_tokens).encode(heldout))
    encode_s_sp, _ = best_of(lambda: sp.encode(heldout))
    word = long_word(LONG_WORD_BYTES)
    short_word = list(word[:SHORT_WORD_BYTES])
    short_s_simple, short_ids_simple = best_of(lambda: encode_chunk_simple(short_word, ours.merges))
    short_s_heap, short_ids_heap = best_of(lambda: encode_chunk_heap(short_word, ours.merges))
    long_s_heap, long_ids = best_of(lambda: BPETokenizer(ours.merges, ours.pattern, ours.special_tokens).encode(word))
    assert ours.decode_bytes(long_ids) == word
    mb = len(heldout) / 1e6
    commit, dirty = source_commit(), source_changed()
    result = {
        "commit": commit, "commit_dirty": dirty, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(),
        "corpus": f"Python {platform.python_version()} stdlib .py files, sorted, no tests or site-packages",
        "corpus_bytes": len(train_data), "corpus_sha256": hashlib.sha256(train_data).hexdigest(),
        "heldout_bytes": len(heldout), "heldout_sha256": hashlib.sha256(heldout).hexdigest(),
        "vocab_size": VOCAB_SIZE, "threads": THREADS, "repeats": REPEATS,
        "train_s_ours": round(train_s_ours, 3), "train_s_sentencepiece": round(train_s_sp, 3),
        "train_ratio": round(train_s_ours / train_s_sp, 2),
        "encode_mb_s_ours": round(mb / encode_s_ours, 2), "encode_mb_s_sentencepiece": round(mb / encode_s_sp, 2),
        "bytes_per_token_ours": round(bytes_per_token(ours, heldout), 3),
        "bytes_per_token_sentencepiece": round(bytes_per_token(sp, heldout), 3),
        "long_word": "the corpus's ASCII letters, everything else removed: one chunk",
        "long_word_bytes": len(word), "long_word_sha256": hashlib.sha256(word).hexdigest(),
        "long_word_encode_s_heap": round(long_s_heap, 3),
        "short_word_bytes": len(short_word), "short_word_encode_s_simple": round(short_s_simple, 3),
        "short_word_encode_s_heap": round(short_s_heap, 4),
        "short_word_simple_over_heap": round(short_s_simple / short_s_heap, 1),
        "heap_matches_simple": short_ids_heap == short_ids_simple,
    }
    result["floors_met"] = (result["train_ratio"] <= 20 and result["encode_mb_s_ours"] >= 1.0
                            and result["bytes_per_token_ours"] >= 0.95 * result["bytes_per_token_sentencepiece"]
                            and result["heap_matches_simple"] and result["long_word_encode_s_heap"] <= 3.0)
    text = json.dumps(result)
    atomic_write(RESULTS, json.dumps(result, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
