"""Our byte-level BPE against SentencePiece BPE on the same stdlib corpus: training time, encoding speed, compression.

Both train on the first 1 MiB of the Python standard library's source (`stdlib_corpus`) with vocabulary size 2048
(256 bytes + merges; SentencePiece gets as many ordinary pieces) and encode the next 1 MiB. One thread for both
(OMP/torch threads and SentencePiece's `num_threads`); each figure is the best of 3 runs; encoding starts from a
fresh tokenizer (cold chunk cache). The result records the git commit it ran at (and whether the working tree had
changes) beside its config and thread count. Prints one JSON object on its last line and writes it to
bench/results/tokenizer.json.
"""
import os

THREADS = 1
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("WAKEA_QUIET", "1")

import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from wakea_edu.core import atomic_write
from wakea_edu.text.tokenizer import BPETokenizer, SentencePieceTokenizer, bytes_per_token, stdlib_corpus

CORPUS_BYTES, VOCAB_SIZE, REPEATS = 2**20, 2048, 3
RESULTS = Path(__file__).parent / "results" / "tokenizer.json"


def git_commit() -> tuple[str | None, bool | None]:
    "(HEAD's commit, whether the working tree differs from it), or (None, None) outside a git checkout."
    def git(*args):
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, check=True).stdout.strip()
    try: return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError): return None, None


def best_of(fn, repeats=REPEATS):
    "(fastest wall time in seconds, last result) over `repeats` calls of `fn`."
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    torch.set_num_threads(THREADS)
    train_data, heldout = stdlib_corpus(CORPUS_BYTES), stdlib_corpus(CORPUS_BYTES, offset=CORPUS_BYTES)
    train_s_ours, ours = best_of(lambda: BPETokenizer.train(train_data, VOCAB_SIZE))
    train_s_sp, sp = best_of(lambda: SentencePieceTokenizer.train(train_data, VOCAB_SIZE, num_threads=THREADS))
    encode_s_ours, _ = best_of(lambda: BPETokenizer(ours.merges, ours.pattern, ours.special_tokens).encode(heldout))
    encode_s_sp, _ = best_of(lambda: sp.encode(heldout))
    mb = len(heldout) / 1e6
    commit, dirty = git_commit()
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
    }
    result["floors_met"] = (result["train_ratio"] <= 20 and result["encode_mb_s_ours"] >= 1.0
                            and result["bytes_per_token_ours"] >= 0.95 * result["bytes_per_token_sentencepiece"])
    text = json.dumps(result)
    atomic_write(RESULTS, json.dumps(result, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
