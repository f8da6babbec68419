"Chapter 07: sampling filters, seeded sampling, the KV cache (cached == uncached), streaming UTF-8 text."
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wakea_edu.text.generate import (decode_stream, generate, generate_tokens, new_caches, prefill, sample_next, stream_text,
                                     top_k_filter, top_p_filter)
from wakea_edu.text.model import LMConfig, WakeaLM

KNOWN_PROBS = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])


def kept(logits):
    return (logits > float("-inf")).int().tolist()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return WakeaLM(LMConfig(vocab_size=97, context_length=96, n_layers=2, n_heads=2, d_model=32)).eval()


def prompt_ids(batch, length, seed=0):
    return torch.randint(0, 97, (batch, length), generator=torch.Generator().manual_seed(seed))


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_top_k_keeps_the_k_largest_and_breaks_ties_by_lower_id():
    logits = torch.tensor([[0.1, 2.0, -1.0, 3.0, 0.5], [1.0, 1.0, 1.0, 0.0, 1.0]])
    assert kept(top_k_filter(logits, 2)) == [[0, 1, 0, 1, 0], [1, 1, 0, 0, 0]]
    assert kept(top_k_filter(logits, 1)) == [[0, 0, 0, 1, 0], [1, 0, 0, 0, 0]]
    filtered = top_k_filter(logits, 3)
    assert torch.equal(filtered[filtered > float("-inf")], logits[filtered > float("-inf")])  # kept logits unchanged
    assert torch.equal(top_k_filter(logits, 5), logits) and torch.equal(top_k_filter(logits, 50), logits)
    with pytest.raises(ValueError, match="top_k"): top_k_filter(logits, 0)


@pytest.mark.parametrize("p,expected", [(0.9, [1, 1, 1, 1, 0]), (0.6, [1, 1, 0, 0, 0]), (0.5, [1, 0, 0, 0, 0]),
                                        (0.01, [1, 0, 0, 0, 0]), (0.96, [1, 1, 1, 1, 1]), (1.0, [1, 1, 1, 1, 1])])
def test_top_p_keeps_the_fewest_tokens_reaching_p(p, expected):
    for order in (torch.arange(5), torch.tensor([3, 0, 4, 2, 1])):  # the answer does not depend on where tokens sit
        logits = KNOWN_PROBS.log()[:, order]
        assert kept(top_p_filter(logits, p)) == [[expected[i] for i in order.tolist()]]


def test_top_p_ties_rows_and_bad_p():
    tied = torch.tensor([[0.4, 0.3, 0.3], [0.3, 0.3, 0.4]]).log()
    assert kept(top_p_filter(tied, 0.6)) == [[1, 1, 0], [1, 0, 1]]  # of two equal tokens the lower id goes first
    assert kept(top_p_filter(torch.zeros(1, 4), 0.3)) == [[1, 1, 0, 0]]
    assert kept(top_p_filter(torch.tensor([[0.0, float("-inf"), 1.0]]), 0.999)) == [[1, 0, 1]]
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="top_p"): top_p_filter(tied, bad)


def test_filters_match_transformers_warpers():
    warpers = pytest.importorskip("transformers.generation.logits_process")
    logits = torch.randn(32, 500, generator=seeded()) * 2
    for k in (1, 7, 100, 499):
        assert torch.equal(top_k_filter(logits, k), warpers.TopKLogitsWarper(k)(None, logits))
    for p in (0.1, 0.5, 0.8, 0.95):
        assert torch.equal(top_p_filter(logits, p), warpers.TopPLogitsWarper(p)(None, logits))


def test_sample_next_greedy_seeded_and_distributed():
    logits = torch.tensor([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    assert sample_next(logits, temperature=0).tolist() == [1, 2]
    many = torch.tensor([1.0, 2.0, 0.0, 0.5]).expand(5000, -1)
    draws = sample_next(many, generator=seeded(0))
    assert torch.equal(draws, sample_next(many, generator=seeded(0)))
    assert not torch.equal(draws, sample_next(many, generator=seeded(1)))
    assert torch.allclose(torch.bincount(draws, minlength=4) / 5000, many[0].softmax(-1), atol=0.025)
    assert set(sample_next(many, top_k=2, generator=seeded()).tolist()) == {0, 1}
    assert set(sample_next(many, temperature=0.05, generator=seeded()).tolist()) == {1}
    with pytest.raises(ValueError, match="temperature"): sample_next(logits, temperature=-1)
    with pytest.raises(ValueError, match="Generator"): sample_next(logits)


def test_prefill_in_chunks_gives_the_full_forward_logits(model):
    ids = prompt_ids(3, 13)
    with torch.no_grad():
        reference = model(ids)[:, -1]
        for chunk in (None, 1, 4, 13, 20):
            caches = new_caches(model, 3, 16)
            assert len(caches) == 2 and caches[0].k.shape == (3, 2, 16, 16)
            assert torch.allclose(prefill(model, ids, caches, chunk), reference, atol=1e-5)


@pytest.mark.parametrize("prompt_len", [1, 2, 7, 16])
@pytest.mark.parametrize("chunk", [None, 1, 3])
def test_cached_greedy_equals_uncached(model, prompt_len, chunk):
    ids = prompt_ids(2, prompt_len)
    uncached = generate(model, ids, 40, temperature=0, use_cache=False)
    assert uncached.shape == (2, prompt_len + 40) and torch.equal(uncached[:, :prompt_len], ids)
    assert torch.equal(generate(model, ids, 40, temperature=0, prefill_chunk=chunk), uncached)


@pytest.mark.parametrize("prompt_len", [1, 9])
def test_sampling_reproducible_seed_dependent_and_cache_independent(model, prompt_len):
    ids = prompt_ids(2, prompt_len)
    kwargs = dict(temperature=1.2, top_k=40, top_p=0.95)
    first = generate(model, ids, 32, generator=seeded(0), **kwargs)
    assert torch.equal(first, generate(model, ids, 32, generator=seeded(0), **kwargs))
    assert not torch.equal(first, generate(model, ids, 32, generator=seeded(1), **kwargs))
    assert torch.equal(first, generate(model, ids, 32, generator=seeded(0), use_cache=False, **kwargs))
    assert torch.equal(first, generate(model, ids, 32, generator=seeded(0), prefill_chunk=4, **kwargs))
    assert torch.equal(first, generate(model, ids, 32, **kwargs))  # no generator: a fresh one seeded with 0


def test_sampling_leaves_the_global_rng_alone(model):
    state = torch.random.get_rng_state()
    generate(model, prompt_ids(1, 4), 10, generator=seeded(3))
    generate(model, prompt_ids(1, 4), 10)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_eos_stops_each_row_and_the_loop(model):
    ids = prompt_ids(1, 5)
    full = generate(model, ids, 20, generator=seeded())[0, 5:]
    eos = full[3].item()
    stopped = generate(model, ids, 20, generator=seeded(), eos_id=eos)[0, 5:]
    first = full.tolist().index(eos)
    assert stopped.tolist() == full[:first + 1].tolist()
    rows = torch.cat([ids, prompt_ids(1, 5, seed=7)])
    out = generate(model, rows, 20, temperature=0, eos_id=eos)[:, 5:]
    for row in out.tolist():  # once a row has produced eos it only produces eos
        if eos in row: assert set(row[row.index(eos):]) == {eos}


def test_generate_tokens_yields_one_token_per_row_per_step(model):
    steps = list(generate_tokens(model, prompt_ids(3, 4), 6, temperature=0))
    assert len(steps) == 6 and all(s.shape == (3,) and s.dtype == torch.long for s in steps)
    assert list(generate_tokens(model, prompt_ids(3, 4), 0)) == []


def test_too_long_and_cache_overflow_give_clear_errors(model):
    with pytest.raises(ValueError, match="exceed the model's context length 96"):
        generate(model, prompt_ids(1, 90), 7)
    generate(model, prompt_ids(1, 90), 6)  # exactly fills the context
    with pytest.raises(ValueError, match=r"\(batch, T\)"): generate(model, torch.tensor([1, 2, 3]), 2)
    caches = new_caches(model, 1, max_len=8)
    with torch.no_grad():
        model(prompt_ids(1, 6), caches=caches)
        with pytest.raises(ValueError, match="KVCache holds 8 positions, asked to fill up to 10"):
            model(prompt_ids(1, 4), offset=6, caches=caches)


class PieceTokenizer:
    "Toy tokenizer: token i is the byte string pieces[i]."
    def __init__(self, pieces): self.pieces = pieces
    def decode_bytes(self, ids): return b"".join(self.pieces[i] for i in ids)
    def decode(self, ids): return self.decode_bytes(ids).decode("utf-8", errors="replace")


BYTES = PieceTokenizer([bytes([b]) for b in range(256)])


def test_stream_never_splits_e_acute_or_emoji():
    toy = PieceTokenizer([b"caf", b"\xc3", b"\xa9 ", b"\xf0\x9f", b"\x99", b"\x82", b"!"])  # "é" and "🙂" cut across tokens
    ids = [0, 1, 2, 3, 4, 5, 6]
    pieces = list(decode_stream(ids, toy))
    assert pieces == ["caf", "é ", "🙂", "!"] and "".join(pieces) == toy.decode(ids) == "café 🙂!"
    text = "Crème brûlée 🙂, naïve café — 東京 🙃!"
    byte_ids = list(text.encode())
    pieces = list(decode_stream(byte_ids, BYTES))
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert list(decode_stream(torch.tensor(byte_ids), BYTES)) == pieces  # tensors of ids work too


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=40))
def test_stream_joins_to_decode_even_for_invalid_bytes(byte_ids):
    assert "".join(decode_stream(byte_ids, BYTES)) == BYTES.decode(byte_ids)


def test_stream_with_the_real_bpe_tokenizer(model):
    BPETokenizer = pytest.importorskip("wakea_edu.text.tokenizer").BPETokenizer
    corpus = "Le café est prêt. Crème brûlée! Ça va très bien 🙂🙃🙂. Die Brücke ist groß. 東京は雨です。" * 5
    bpe = BPETokenizer.train(corpus, 300)
    text = "Un café très chaud 🙂 à Tōkyō 東京 🙃!"
    ids = bpe.encode(text)
    assert any(not _valid_utf8(bpe.decode_bytes([i])) for i in ids), "the test needs a token that splits a character"
    assert "".join(decode_stream(ids, bpe)) == bpe.decode(ids) == text
    torch.manual_seed(0)
    lm = WakeaLM(LMConfig(vocab_size=bpe.n_vocab, context_length=64, n_layers=2, n_heads=2, d_model=32)).eval()
    prompt = bpe.encode("Le café")
    streamed = "".join(stream_text(lm, bpe, prompt, 30, top_p=0.95, generator=seeded()))
    new = generate(lm, torch.tensor([prompt]), 30, top_p=0.95, generator=seeded())[0, len(prompt):]
    assert streamed == bpe.decode(new)


def _valid_utf8(data: bytes) -> bool:
    try: data.decode("utf-8")
    except UnicodeDecodeError: return False
    return True
