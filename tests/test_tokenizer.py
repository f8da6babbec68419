"Chapter 02: byte-level BPE — round trips, the minbpe example, special tokens, files, and SentencePiece as the reference."
import json
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from wakea_edu.text.tokenizer import (SPECIAL_TOKENS, BPETokenizer, SentencePieceTokenizer, TokenizerError,
                                      bytes_per_token, stdlib_corpus, train_bpe)


@pytest.fixture(scope="module")
def corpus():
    return stdlib_corpus(100_000)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return BPETokenizer.train(corpus, 512)


def naive_train(data: bytes, vocab_size: int) -> dict:
    "Reference trainer: recount every pair after every merge, per chunk, ties to the smallest pair."
    import regex
    from wakea_edu.text.tokenizer import GPT4_SPLIT_PATTERN, as_escaped_text, escaped_bytes, merge
    chunks = [list(escaped_bytes(c)) for c in regex.findall(GPT4_SPLIT_PATTERN, as_escaped_text(data))]
    merges = {}
    while len(merges) < vocab_size - 256:
        counts = Counter(p for ids in chunks for p in zip(ids, ids[1:]))
        if not counts: break
        pair = min(counts, key=lambda p: (-counts[p], p))
        merges[pair] = 256 + len(merges)
        chunks = [merge(ids, pair, merges[pair]) for ids in chunks]
    return merges


def test_minbpe_wikipedia_example():
    for tok in (BPETokenizer.train("aaabdaaabac", 256 + 3, pattern=None), BPETokenizer.train("aaabdaaabac", 256 + 3)):
        assert tok.merges == {(97, 97): 256, (97, 98): 257, (256, 257): 258}
        assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
        assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"


def test_incremental_training_matches_recounting(corpus):
    assert train_bpe(corpus[:20_000], 256 + 120) == naive_train(corpus[:20_000], 256 + 120)


def test_training_is_deterministic_and_prefix_closed(corpus):
    long = train_bpe(corpus[:30_000], 256 + 200)
    assert train_bpe(corpus[:30_000], 256 + 200) == long
    assert train_bpe(corpus[:30_000], 256 + 50) == dict(list(long.items())[:50])


def test_vocabulary_sizes(tokenizer):
    assert tokenizer.vocab_size == 256 + len(tokenizer.merges) == 512
    assert tokenizer.n_vocab == 512 + len(SPECIAL_TOKENS)
    assert sorted(tokenizer.special_ids.values()) == list(range(512, 512 + len(SPECIAL_TOKENS)))
    with pytest.raises(ValueError):
        BPETokenizer.train("abc", 255)


def test_training_stops_when_pairs_run_out():
    assert BPETokenizer.train("ab", 1000).vocab_size == 257


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_round_trip_any_bytes(tokenizer, data):
    ids = tokenizer.encode(data)
    assert tokenizer.decode_bytes(ids) == data
    assert tokenizer.decode(ids) == data.decode("utf-8", errors="replace")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_any_text(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode(text) == tokenizer.encode(text.encode("utf-8"))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=100))
def test_round_trip_without_pattern(data):
    tok = BPETokenizer.train(b"abcabcabd\xff\xfe" * 10, 256 + 20, pattern=None)
    assert tok.decode_bytes(tok.encode(data)) == data


def test_empty_and_invalid_utf8(tokenizer):
    assert tokenizer.encode("") == tokenizer.encode(b"") == []
    assert tokenizer.decode([]) == "" and tokenizer.decode_bytes([]) == b""
    assert tokenizer.decode_bytes(tokenizer.encode(b"\xff\xc3")) == b"\xff\xc3"
    assert tokenizer.decode(tokenizer.encode(b"\xff")) == "\ufffd"
    with pytest.raises(TokenizerError, match="not in the vocabulary"):
        tokenizer.decode([tokenizer.n_vocab])
    with pytest.raises(TokenizerError):
        tokenizer.decode([-1])


def test_special_tokens(tokenizer):
    text = "<|bos|><|user|>what falls?<|assistant|>the cup<|eos|>"
    plain = tokenizer.encode(text)
    assert not set(plain) & set(tokenizer.special_ids.values())
    ids = tokenizer.encode(text, allowed_special="all")
    sid = tokenizer.special_ids
    assert ids[:2] == [sid["<|bos|>"], sid["<|user|>"]] and ids[-1] == sid["<|eos|>"]
    assert tokenizer.decode(ids) == tokenizer.decode(plain) == text
    only_bos = tokenizer.encode(text, allowed_special={"<|bos|>"})
    assert only_bos[0] == sid["<|bos|>"] and sid["<|user|>"] not in only_bos
    assert tokenizer.encode(text, allowed_special="<|bos|>") == only_bos
    assert set(SPECIAL_TOKENS) <= set(sid)
    with pytest.raises(TokenizerError, match="unknown special"):
        tokenizer.encode("x", allowed_special={"<|nope|>"})


def test_save_load_round_trip(tokenizer, corpus, tmp_path):
    path = tokenizer.save(tmp_path / "tok.json")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temporary file left behind
    loaded = BPETokenizer.load(path)
    assert loaded.merges == tokenizer.merges and loaded.special_ids == tokenizer.special_ids
    assert loaded.pattern == tokenizer.pattern
    sample = corpus[-5000:]
    assert loaded.encode(sample) == tokenizer.encode(sample)


def test_bad_files_are_refused_by_name(tokenizer, tmp_path):
    good = tokenizer.save(tmp_path / "good.json").read_bytes()
    state = json.loads(good)
    cases = {
        "truncated.json": good[: len(good) // 2],
        "binary.json": b"\x00\xff\x13garbage",
        "foreign.json": json.dumps({"model": {"type": "BPE"}}).encode(),
        "list.json": b"[1, 2, 3]",
        "future.json": json.dumps(state | {"version": 99}).encode(),
        "bad_merge.json": json.dumps(state | {"merges": [[0, 1], [5000, 2]]}).encode(),
        "dup_merge.json": json.dumps(state | {"merges": [[0, 1], [0, 1]]}).encode(),
        "bad_pattern.json": json.dumps(state | {"pattern": "(unclosed"}).encode(),
        "bad_specials.json": json.dumps(state | {"special_tokens": ["<|a|>", "<|a|>"]}).encode(),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TokenizerError, match=name):
            BPETokenizer.load(tmp_path / name)
    with pytest.raises(TokenizerError, match="missing.json"):
        BPETokenizer.load(tmp_path / "missing.json")


def test_sentencepiece_reference_round_trips_and_matches_vocab(corpus):
    sp = SentencePieceTokenizer.train(corpus, 512)
    assert sp.vocab_size == 512
    text = corpus[-5000:].decode("utf-8", errors="replace")
    assert sp.decode(sp.encode(text)) == text
    ids = sp.encode("<|bos|>x = 1\n", allowed_special="all")
    assert ids[0] == sp.special_ids["<|bos|>"] and sp.decode(ids) == "<|bos|>x = 1\n"
    assert sp.special_ids["<|bos|>"] not in sp.encode("<|bos|>")


def test_compression_within_5_percent_of_sentencepiece():
    train, heldout = stdlib_corpus(256_000), stdlib_corpus(64_000, offset=256_000)
    ours = bytes_per_token(BPETokenizer.train(train, 1024), heldout)
    reference = bytes_per_token(SentencePieceTokenizer.train(train, 1024), heldout)
    assert ours >= 0.95 * reference


def test_stdlib_corpus_is_contiguous():
    whole = stdlib_corpus(3000)
    assert len(whole) == 3000 and stdlib_corpus(1000, offset=2000) == whole[2000:]


def test_merges_are_kept_in_id_order_and_checked():
    tok = BPETokenizer({(256, 257): 258, (97, 97): 256, (97, 98): 257}, pattern=None)
    assert list(tok.merges.values()) == [256, 257, 258] and tok.decode([258]) == "aaab"
    with pytest.raises(TokenizerError, match="merge ids"):
        BPETokenizer({(97, 97): 300})


def test_tinyworld_tokenizer_round_trips_validation_stories():
    from wakea_edu.recipes.tokenizer import tinyworld_tokenizer
    from wakea_edu.world.tinyworld import TinyWorld, WorldConfig
    world = TinyWorld(WorldConfig(seed=0))
    tok = tinyworld_tokenizer(world, 1024)
    assert 256 < tok.vocab_size <= 1024 and tok.n_vocab == tok.vocab_size + len(SPECIAL_TOKENS)
    val = world.corpus("val")
    assert tok.decode(tok.encode(val)) == val
    assert tinyworld_tokenizer(None, 1024).merges == tok.merges                    # the default world is seed 0's
    # a big world trains on its first stories
    assert tinyworld_tokenizer(world, 300, max_stories=50).merges == BPETokenizer.train("\n".join(world.stories("train")[:50]), 300).merges


# --- hardening: split patterns, the chunk cache, the merge heap ---

def test_pattern_that_drops_text_is_refused_on_encode(tokenizer):
    letters = BPETokenizer(tokenizer.merges, pattern=r"\p{L}+")
    with pytest.raises(TokenizerError, match=r"drops text.*cover 10 of 16 characters.*gap at 5: ', World"):
        letters.encode("Hello, World 42!")
    with pytest.raises(TokenizerError, match="drops text"):
        letters.encode("<|bos|>Hi!", allowed_special="all")
    assert letters.decode(letters.encode("Hello")) == "Hello"           # text it covers still encodes
    with pytest.raises(TokenizerError, match="drops text"):
        BPETokenizer({}, pattern=r"a?").encode("ab")                    # empty matches cover nothing


def test_capturing_groups_are_refused():
    with pytest.raises(TokenizerError, match="capturing groups"):
        BPETokenizer({}, pattern=r"(\w+)|\W")
    assert BPETokenizer({}, pattern=r"(?:\w+)|\W").encode("ab, c") == list(b"ab, c")


def test_unknown_pattern_is_refused_on_load_unless_trusted(tokenizer, tmp_path):
    from wakea_edu.text.tokenizer import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, KNOWN_SPLIT_PATTERNS
    assert KNOWN_SPLIT_PATTERNS == {None, GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN}
    for pattern in KNOWN_SPLIT_PATTERNS:
        path = BPETokenizer(tokenizer.merges, pattern).save(tmp_path / "known.json")
        assert BPETokenizer.load(path).pattern == pattern
    path = BPETokenizer(tokenizer.merges, pattern=r"\p{L}+|\P{L}+").save(tmp_path / "custom.json")
    with pytest.raises(TokenizerError, match=r"custom\.json.*not a known one.*trust_pattern=True"):
        BPETokenizer.load(path)
    trusted = BPETokenizer.load(path, trust_pattern=True)
    assert trusted.decode(trusted.encode("Hello, World 42!")) == "Hello, World 42!"
    state = json.loads(path.read_text())
    (tmp_path / "groups.json").write_text(json.dumps(state | {"pattern": r"(\w+)|\W"}))
    with pytest.raises(TokenizerError, match=r"groups\.json.*capturing groups"):
        BPETokenizer.load(tmp_path / "groups.json", trust_pattern=True)
    (tmp_path / "number.json").write_text(json.dumps(state | {"pattern": 42}))
    with pytest.raises(TokenizerError, match=r"number\.json.*string or null"):
        BPETokenizer.load(tmp_path / "number.json", trust_pattern=True)


def test_catastrophic_pattern_stops_at_the_time_limit(tokenizer):
    # (?:a|aa)+$ backtracks through ~1.6^n ways to split a run of n a's: hours for 40 without a limit
    slow = BPETokenizer(tokenizer.merges, pattern=r"(?:a|aa)+$|[\s\S]")
    assert slow.decode(slow.encode("aaa")) == "aaa"
    with pytest.raises(TokenizerError, match=r"ran over 1\.0 s on 41 characters"):
        slow.encode("a" * 40 + "!")


def test_gpt2_pattern_round_trips():
    from wakea_edu.text.tokenizer import GPT2_SPLIT_PATTERN
    tok = BPETokenizer.train(stdlib_corpus(20_000), 300, pattern=GPT2_SPLIT_PATTERN)
    data = stdlib_corpus(5000, offset=20_000) + b"\xff\xfe don't 1234567 \r\n\t x"
    assert tok.decode_bytes(tok.encode(data)) == data


def test_chunk_cache_is_a_bounded_lru(tokenizer):
    assert tokenizer._cached_chunk.cache_parameters()["maxsize"] == 2**16
    tok = BPETokenizer(tokenizer.merges, cache_size=100)
    words = [" w" + "".join("abcdefghij"[int(d)] for d in f"{k:04d}") for k in range(1000)]
    tok.encode(words[0])
    for k in range(1, 99): tok.encode(words[k])
    hits = tok._cached_chunk.cache_info().hits
    tok.encode(words[0])                                                    # a hit: now the most recent
    assert tok._cached_chunk.cache_info().hits == hits + 1
    for k in range(99, 1000): tok.encode(words[k])
    assert tok._cached_chunk.cache_info().currsize == 100                    # bounded after 1000 distinct chunks
    tok.encode(words[0])
    assert tok._cached_chunk.cache_info().hits == hits + 1                   # evicted: least recently used
    currsize = tok._cached_chunk.cache_info().currsize
    long_word = "x" * 5000
    assert tok.decode(tok.encode(long_word)) == long_word
    info = tok._cached_chunk.cache_info()
    assert (info.currsize, info.misses) == (currsize, tok._cached_chunk.cache_info().misses)  # long chunks bypass it
    assert "".join(tok.decode(tok.encode(w)) for w in words) == "".join(words)


def test_tokenizer_pickles_without_its_cache(tokenizer, corpus):
    import pickle
    tokenizer.encode(corpus[:2000])
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.merges == tokenizer.merges and copy.pattern == tokenizer.pattern and copy.special_ids == tokenizer.special_ids
    assert copy._cached_chunk.cache_info().currsize == 0 and copy.encode(corpus[:2000]) == tokenizer.encode(corpus[:2000])


@pytest.fixture(scope="module")
def abc_merges():
    "Many merges over three letters: long runs, overlapping pairs and ties everywhere."
    import random
    rng = random.Random(0)
    return train_bpe(bytes(rng.choice(b"abc") for _ in range(5000)), 256 + 100, pattern=None)


def test_heap_matches_simple_loop_on_random_and_corpus_chunks(tokenizer, corpus, abc_merges):
    import random

    import regex
    from wakea_edu.text.tokenizer import GPT4_SPLIT_PATTERN, as_escaped_text, encode_chunk_heap, encode_chunk_simple, escaped_bytes
    rng = random.Random(0)
    for _ in range(500):
        ids = [rng.choice(b"abc") for _ in range(rng.randrange(120))]
        assert encode_chunk_heap(ids, abc_merges) == encode_chunk_simple(ids, abc_merges), ids
        ids = list(rng.randbytes(rng.randrange(120)))
        assert encode_chunk_heap(ids, tokenizer.merges) == encode_chunk_simple(ids, tokenizer.merges), ids
    for chunk in dict.fromkeys(regex.findall(GPT4_SPLIT_PATTERN, as_escaped_text(corpus))):
        ids = list(escaped_bytes(chunk))
        assert encode_chunk_heap(ids, tokenizer.merges) == encode_chunk_simple(ids, tokenizer.merges), chunk
    whole = list(corpus[:20_000])                                             # one long chunk without the pattern
    assert encode_chunk_heap(whole, tokenizer.merges) == encode_chunk_simple(whole, tokenizer.merges)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(b"abc"), max_size=200))
def test_heap_matches_simple_loop_property(abc_merges, ids):
    from wakea_edu.text.tokenizer import encode_chunk_heap, encode_chunk_simple
    assert encode_chunk_heap(ids, abc_merges) == encode_chunk_simple(ids, abc_merges)
    assert encode_chunk_heap(ids, {}) == ids


class CountingMerges(dict):
    "Merges that count their look-ups: the work an encoder does, without a clock."
    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)


def test_heap_work_grows_linearly_with_the_chunk(tokenizer):
    from wakea_edu.text.tokenizer import encode_chunk_heap, encode_chunk_simple
    letters = bytes(b for b in stdlib_corpus(200_000) if chr(b).isalpha())
    lookups = {}
    for n in (5_000, 50_000):
        heap = CountingMerges(tokenizer.merges)
        encode_chunk_heap(list(letters[:n]), heap)
        # n - 1 initial pairs; each merge queues at most two pairs, and each queued pair is checked once
        assert heap.lookups <= 6 * n
        lookups[n] = heap.lookups
    assert lookups[50_000] <= 12 * lookups[5_000]                             # ten times the text, about ten times the work
    simple = CountingMerges(tokenizer.merges)
    assert encode_chunk_simple(list(letters[:5_000]), simple) == encode_chunk_heap(list(letters[:5_000]), tokenizer.merges)
    assert simple.lookups > 20 * lookups[5_000]                               # the loop rescans once per merge round
    long_word = letters[:100_000]
    assert tokenizer.decode_bytes(tokenizer.encode(long_word)) == long_word   # one 100 kB chunk, through the heap
