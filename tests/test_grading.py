"The grader can fail: solutions score 100%, blanks 0%, mutants lose points, hostile notebooks get 0 without breaking the run."
import json, re, subprocess, sys
from pathlib import Path

import nbformat
import pytest

from wakea_edu.cli import main
from wakea_edu.exercises import build_exercises
from wakea_edu.grading import grade

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = {p.name: p for p in sorted((ROOT/"solutions").glob("[0-9][0-9]_*.ipynb"))}
WAKEA = str(Path(sys.executable).parent/"wakea-edu")


@pytest.fixture(scope="module")
def exercises(tmp_path_factory):
    out = tmp_path_factory.mktemp("exercises")
    return {p.name: p for p in build_exercises(ROOT/"solutions", out)}


def with_cells(tmp_path, solution: str, *sources: str, name: str | None = None) -> Path:
    "A copy of solution notebook `solution` with graded cells `sources` appended (later definitions win)."
    nb = nbformat.read(SOLUTIONS[solution], as_version=4)
    nb.cells += [nbformat.v4.new_code_cell("#| graded\n" + s) for s in sources]
    path = tmp_path/(name or solution)
    nbformat.write(nb, path)
    return path


def failed(report) -> set[str]:
    return {t.name for t in report.tests if not t.passed}


def test_every_chapter_has_a_solution():
    assert list(SOLUTIONS) == ["00_core.ipynb", "01_world.ipynb", "02_tokenizer.ipynb", "03_attention.ipynb", "04_rope.ipynb",
                              "05_transformer.ipynb", "06_pretraining.ipynb", "07_generation.ipynb", "08_vision.ipynb", "10_audio.ipynb",
                              "11_adapters.ipynb"]


@pytest.mark.parametrize("name", SOLUTIONS)
def test_solution_scores_full_marks(name):
    report = grade(SOLUTIONS[name])
    assert report.max_score >= 10 and report.score == report.max_score, report.to_text()


@pytest.mark.parametrize("name", SOLUTIONS)
def test_blank_exercise_scores_zero(exercises, name):
    report = grade(exercises[name])
    assert report.max_score >= 10 and report.score == 0, report.to_text()
    assert all("not implemented yet" in t.feedback for t in report.tests), report.to_text()


def test_exercises_build_is_deterministic_and_committed(tmp_path, exercises):
    again = build_exercises(ROOT/"solutions", tmp_path)
    assert [p.read_bytes() for p in again] == [exercises[p.name].read_bytes() for p in again]
    assert [p.read_bytes() for p in again] == [(ROOT/"exercises"/p.name).read_bytes() for p in again], "run `wakea-edu exercises build`"
    for path in again:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert not any(c.outputs or c.execution_count for c in code)
        assert "BEGIN SOLUTION" not in path.read_text() and "NotImplementedError" in path.read_text()
        assert f"blob/main/exercises/{path.name}" in nb.cells[0].source


MUTANTS = [  # (solution, replacement graded cell, the tests it must fail)
    ("00_core.ipynb", "def seed_everything(seed):\n    random.seed(seed); np.random.seed(seed % 2**32)", {"seeds_torch"}),
    ("00_core.ipynb", "def seed_everything(seed):\n    random.seed(seed); np.random.seed(seed + 1); torch.manual_seed(seed)", {"seeds_numpy"}),
    ("00_core.ipynb", "def atomic_write(path, data):\n    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)\n"
                      "    with open(path, 'wb') as f: f.write(data.encode() if isinstance(data, str) else data)\n    return path",
     {"atomic_write_renames_a_temporary_file", "atomic_write_keeps_old_file_on_failure"}),
    ("00_core.ipynb", "def atomic_write(path, data):\n    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)\n"
                      "    fd, tmp = tempfile.mkstemp(dir=path.parent)\n    with os.fdopen(fd, 'wb') as f: f.write(data.encode() if isinstance(data, str) else data)\n"
                      "    os.replace(tmp, path)\n    return path", {"atomic_write_keeps_old_file_on_failure"}),
    ("00_core.ipynb", "def load_checkpoint(path):  # never compares the checksum\n    path = Path(path)\n    try: blob = path.read_bytes()\n"
                      "    except FileNotFoundError: raise CheckpointError(f'{path}: not found') from None\n"
                      "    return load(blob), json.loads(json.loads(blob[8:8 + int.from_bytes(blob[:8], 'little')])['__metadata__']['meta'])",
     {"checkpoint_refuses_corrupted_file"}),
    ("00_core.ipynb", "_save, _load = save_checkpoint, load_checkpoint\n"
                      "def save_checkpoint(path, tensors, meta=None):  # the meta in a sidecar, as the old format had it\n"
                      "    atomic_write(Path(path).with_suffix('.json'), json.dumps(meta or {}))\n    return _save(path, tensors)\n"
                      "def load_checkpoint(path):\n    return _load(path)[0], json.loads(Path(path).with_suffix('.json').read_text())",
     {"checkpoint_is_one_file", "checkpoint_matches_course_format"}),
    ("00_core.ipynb", "def load_checkpoint(path, _load=load_checkpoint):\n    Path(path).read_bytes()\n    return _load(path)",
     {"checkpoint_missing_file_is_named"}),
    ("01_world.ipynb", "def entropy_bits(probs):\n    return -sum(p * math.log(p) for p in probs.values() if p > 0)",
     {"entropy_of_uniform_distribution", "entropy_skips_impossible_outcomes", "entropy_floor_weights_each_situation"}),
    ("01_world.ipynb", "def outcome_distribution(rules, material, action):\n    return dict(rules[(material, action)])",
     {"outcomes_fall_back_to_any_material", "outcomes_refuse_unknown_action"}),
    ("01_world.ipynb", "def story_log2_prob(rules, story):\n    return sum(math.log2(outcome_distribution(rules, m, a).get(r, 0.0)) for m, a, r in story)",
     {"impossible_story_has_log2_prob_minus_inf"}),
    ("02_tokenizer.ipynb", "def get_stats(ids):\n    counts = {}\n    for pair in zip(ids[::2], ids[1::2]): counts[pair] = counts.get(pair, 0) + 1\n    return counts",
     {"get_stats_counts_adjacent_pairs", "get_stats_counts_overlapping_runs"}),
    ("02_tokenizer.ipynb", "def merge(ids, pair, idx):  # off by one: a pair that ends the list is missed\n    out, i = [], 0\n"
                           "    while i < len(ids) - 2:\n        if (ids[i], ids[i + 1]) == pair: out.append(idx); i += 2\n"
                           "        else: out.append(ids[i]); i += 1\n    return out + ids[i:]",
     {"merge_replaces_a_pair_at_the_end"}),
    ("02_tokenizer.ipynb", "def merge(ids, pair, idx):  # overlapping\n    out = []\n    for a, b in zip(ids, ids[1:] + [None]):\n"
                           "        out.append(idx if (a, b) == pair else a)\n    return out",
     {"merge_does_not_overlap"}),
    ("02_tokenizer.ipynb", "_train = train_bpe\ndef train_bpe(text, vocab_size):  # ties go to the largest pair\n    ids, merges = list(text.encode()), {}\n"
                           "    while len(merges) < vocab_size - 256:\n        stats = get_stats(ids)\n        pair = max(stats, key=lambda p: (stats[p], p))\n"
                           "        merges[pair] = 256 + len(merges); ids = merge(ids, pair, merges[pair])\n    return merges",
     {"train_bpe_learns_reference_merges"}),
    ("02_tokenizer.ipynb", "def decode(ids, merges):\n    vocab = {i: bytes([i]) for i in range(256)}\n"
                           "    for (a, b), i in merges.items(): vocab[i] = vocab[a] + vocab[b]\n    return b''.join(vocab[i] for i in ids).decode()",
     {"decode_replaces_invalid_utf8"}),
    ("03_attention.ipynb", "def causal_mask(n_q, n_k):  # aligned top-left, as is_causal=True\n    return torch.ones(n_q, n_k, dtype=torch.bool).tril()",
     {"causal_mask_aligns_bottom_right_with_a_cache", "causal_mask_one_new_token_sees_everything"}),
    ("03_attention.ipynb", "def causal_mask(n_q, n_k):  # off by one: each query also sees the next key\n"
                           "    return torch.ones(n_q, n_k, dtype=torch.bool).tril(diagonal=n_k - n_q + 1)",
     {"causal_mask_square_is_lower_triangular", "causal_mask_aligns_bottom_right_with_a_cache"}),
    ("03_attention.ipynb", "def attention(q, k, v, mask=None):  # not scaled by sqrt(d)\n    scores = q @ k.transpose(-2, -1)\n"
                           "    if mask is not None: scores = scores.masked_fill(~mask, float('-inf'))\n    return scores.softmax(-1) @ v",
     {"attention_matches_sdpa_without_mask", "attention_matches_sdpa_with_a_causal_mask"}),
    ("03_attention.ipynb", "def attention(q, k, v, mask=None):  # masks after the softmax: the weights no longer sum to one\n"
                           "    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)\n"
                           "    return (weights if mask is None else weights * mask) @ v",
     {"attention_matches_sdpa_with_a_causal_mask", "attention_with_fewer_queries_than_keys", "attention_with_padding_and_causal_masks"}),
    ("04_rope.ipynb", "_rope = apply_rope\ndef apply_rope(x, positions, base=10000.0):  # the interleaved convention\n"
                      "    d = x.shape[-1]\n    angles = positions.double()[:, None] * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)\n"
                      "    cos, sin = angles.cos().float(), angles.sin().float()\n    a, b = x.float()[..., 0::2], x.float()[..., 1::2]\n"
                      "    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)",
     {"rope_matches_the_library", "rope_uses_the_base"}),
    ("04_rope.ipynb", "_rope = apply_rope\ndef apply_rope(x, positions, base=10000.0):  # rotates backwards\n    return _rope(x, -positions, base)",
     {"rope_matches_the_library"}),
    ("04_rope.ipynb", "_rope = apply_rope\ndef apply_rope(x, positions, base=10000.0):  # positions counted from 1\n    return _rope(x, positions + 1, base)",
     {"rope_at_position_zero_is_the_identity", "rope_matches_the_library"}),
    ("04_rope.ipynb", "_rope = apply_rope\ndef apply_rope(x, positions, base=10000.0):  # ignores the base\n    return _rope(x, positions)",
     {"rope_uses_the_base"}),
    ("04_rope.ipynb", "_rope = apply_rope\ndef apply_rope(x, positions, base=10000.0):  # returns fp32\n    return _rope(x.float(), positions, base)",
     {"rope_keeps_the_input_dtype"}),
    ("04_rope.ipynb", "def interleaved_to_half(head_dim):  # odds first\n    return torch.cat([torch.arange(1, head_dim, 2), torch.arange(0, head_dim, 2)])",
     {"interleaved_to_half_lists_evens_then_odds", "permutation_maps_interleaved_to_rotate_half"}),
    ("04_rope.ipynb", "def half_to_interleaved(head_dim):  # P itself, not its inverse\n    return interleaved_to_half(head_dim)",
     {"half_to_interleaved_undoes_it"}),
    ("05_transformer.ipynb", "def rms_norm(x, weight, eps=1e-5):  # no fp32 upcast\n"
                             "    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * weight",
     {"rms_norm_squares_in_fp32"}),
    ("05_transformer.ipynb", "def rms_norm(x, weight, eps=1e-5):  # mean instead of mean of squares\n    x32 = x.float()\n"
                             "    return (x32 * torch.rsqrt(x32.mean(-1, keepdim=True).abs() + eps) * weight.float()).to(x.dtype)",
     {"rms_norm_matches_torch"}),
    ("05_transformer.ipynb", "def rms_norm(x, weight, eps=1e-5):  # centres like LayerNorm\n    x32 = x.float() - x.float().mean(-1, keepdim=True)\n"
                             "    return (x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)",
     {"rms_norm_does_not_subtract_the_mean"}),
    ("05_transformer.ipynb", "def rms_norm(x, weight, eps=1e-5):  # eps outside the root\n    x32 = x.float()\n"
                             "    return (x32 / (x32.square().mean(-1, keepdim=True).sqrt() + eps) * weight.float()).to(x.dtype)",
     {"rms_norm_adds_eps_inside_the_root"}),
    ("05_transformer.ipynb", "def swiglu_hidden(d_model, multiple_of=64):  # rounds to the nearest multiple\n"
                             "    return round(8 * d_model / 3 / multiple_of) * multiple_of",
     {"swiglu_hidden_is_eight_thirds_rounded_up"}),
    ("05_transformer.ipynb", "def swiglu_hidden(d_model, multiple_of=64):  # always a multiple of 64\n    return -(-8 * d_model // 192) * 64",
     {"swiglu_hidden_respects_multiple_of"}),
    ("05_transformer.ipynb", "def swiglu(x, w_gate, w_up, w_down):  # silu on the wrong branch\n"
                             "    return F.linear(F.linear(x, w_gate) * F.silu(F.linear(x, w_up)), w_down)",
     {"swiglu_matches_the_library_module"}),
    ("06_pretraining.ipynb", "@torch.no_grad()\ndef adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):\n"
                             "    grad = grad + weight_decay * param  # coupled: Adam's L2 penalty\n    beta1, beta2 = betas\n"
                             "    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)\n"
                             "    param.sub_(lr * (exp_avg / (1 - beta1 ** step)) / ((exp_avg_sq / (1 - beta2 ** step)).sqrt() + eps))",
     {"adamw_decays_weights_decoupled", "adamw_ten_steps_match_torch"}),
    ("06_pretraining.ipynb", "@torch.no_grad()\ndef adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):\n"
                             "    beta1, beta2 = betas  # no bias correction\n    param.mul_(1 - lr * weight_decay)\n"
                             "    exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)\n"
                             "    param.sub_(lr * exp_avg / (exp_avg_sq.sqrt() + eps))",
     {"adamw_first_step_matches_torch", "adamw_ten_steps_match_torch"}),
    ("06_pretraining.ipynb", "_step = adamw_step\ndef adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, **kw):  # rebinds instead of updating in place\n"
                             "    param = param.clone(); _step(param, grad, exp_avg, exp_avg_sq, step, lr, **kw)",
     {"adamw_first_step_matches_torch", "adamw_decays_weights_decoupled", "adamw_ten_steps_match_torch"}),
    ("06_pretraining.ipynb", "_lr = lr_at\ndef lr_at(step, max_lr, warmup_steps, total_steps, min_lr_ratio=0.1):  # warmup starts at 0\n"
                             "    return max_lr * step / warmup_steps if step < warmup_steps else _lr(step, max_lr, warmup_steps, total_steps, min_lr_ratio)",
     {"lr_warms_up_linearly"}),
    ("06_pretraining.ipynb", "_lr = lr_at\ndef lr_at(step, max_lr, warmup_steps, total_steps, min_lr_ratio=0.1):  # decays to 0, not to the floor\n"
                             "    return _lr(step, max_lr, warmup_steps, total_steps, 0.0)",
     {"lr_decays_along_a_cosine", "lr_stays_at_the_floor_after_the_last_step"}),
    ("06_pretraining.ipynb", "_lr = lr_at\ndef lr_at(step, max_lr, warmup_steps, total_steps, min_lr_ratio=0.1):  # the cosine goes on past the end\n"
                             "    if step < warmup_steps: return _lr(step, max_lr, warmup_steps, total_steps, min_lr_ratio)\n"
                             "    floor = max_lr * min_lr_ratio\n"
                             "    return floor + (max_lr - floor) * 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / (total_steps - warmup_steps)))",
     {"lr_stays_at_the_floor_after_the_last_step"}),
    ("06_pretraining.ipynb", "@torch.no_grad()\ndef clip_grad_norm(grads, max_norm):  # clips each tensor on its own\n"
                             "    total = math.sqrt(sum(g.square().sum().item() for g in grads))\n"
                             "    for g in grads: g.mul_(min(1.0, max_norm / (g.norm().item() + 1e-6)))\n    return total",
     {"clip_scales_every_gradient_by_the_same_factor"}),
    ("06_pretraining.ipynb", "_clip = clip_grad_norm\ndef clip_grad_norm(grads, max_norm):  # returns the norm after clipping\n"
                             "    _clip(grads, max_norm)\n    return math.sqrt(sum(g.square().sum().item() for g in grads))",
     {"clip_returns_the_global_norm"}),
    ("07_generation.ipynb", "def top_p_filter(logits, p):  # keeps only tokens within the mass p: may drop the top token\n"
                            "    order = logits.argsort(dim=-1, descending=True, stable=True)\n"
                            "    drop_sorted = logits.float().softmax(-1).gather(-1, order).cumsum(-1) > p\n"
                            "    return logits.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), float('-inf'))",
     {"top_p_always_keeps_the_top_token", "top_p_keeps_the_smallest_nucleus"}),
    ("07_generation.ipynb", "def top_p_filter(logits, p):  # one too few: drops the token that reaches p\n"
                            "    if p >= 1: return logits\n    order = logits.argsort(dim=-1, descending=True, stable=True)\n"
                            "    drop_sorted = logits.float().softmax(-1).gather(-1, order).cumsum(-1) >= p\n    drop_sorted[..., 0] = False\n"
                            "    return logits.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), float('-inf'))",
     {"top_p_keeps_the_smallest_nucleus", "top_p_matches_the_library_on_random_logits"}),
    ("07_generation.ipynb", "_top_p = top_p_filter\ndef top_p_filter(logits, p):  # ties go to the higher id\n    return _top_p(logits.flip(-1), p).flip(-1)",
     {"top_p_breaks_ties_toward_lower_ids"}),
    ("07_generation.ipynb", "_top_p = top_p_filter\ndef top_p_filter(logits, p):  # no special case for p = 1\n    return _top_p(logits, min(p, 1 - 1e-12))",
     {"top_p_of_one_keeps_everything"}),
    ("07_generation.ipynb", "def cache_update(cache_k, cache_v, k, v, offset):  # writes one position too far\n"
                            "    end = offset + k.shape[2]\n    cache_k[:, :, offset + 1:end + 1] = k; cache_v[:, :, offset + 1:end + 1] = v\n"
                            "    return cache_k[:, :, :end + 1], cache_v[:, :, :end + 1]",
     {"cache_update_writes_at_the_offset", "cache_update_decodes_like_full_attention"}),
    ("07_generation.ipynb", "_update = cache_update\ndef cache_update(cache_k, cache_v, k, v, offset):  # returns only the new positions\n"
                            "    _update(cache_k, cache_v, k, v, offset)\n    return k, v",
     {"cache_update_returns_the_filled_prefix", "cache_update_decodes_like_full_attention"}),
    ("07_generation.ipynb", "_update = cache_update\ndef cache_update(cache_k, cache_v, k, v, offset):  # copies\n"
                            "    return tuple(t.clone() for t in _update(cache_k, cache_v, k, v, offset))",
     {"cache_update_returns_views_of_the_cache"}),
    ("07_generation.ipynb", "def cache_update(cache_k, cache_v, k, v, offset):  # no bounds check\n"
                            "    end = offset + k.shape[2]\n    cache_k[:, :, offset:end] = k; cache_v[:, :, offset:end] = v\n"
                            "    return cache_k[:, :, :end], cache_v[:, :, :end]",
     {"cache_update_refuses_to_overflow"}),
    ("08_vision.ipynb", "def patchify(images, patch_size):  # reshapes without moving the grid axes: rows of pixels, not patches\n"
                        "    b, c, h, w = images.shape\n    if h % patch_size or w % patch_size: raise ValueError('ragged')\n"
                        "    return images.reshape(b, -1, c * patch_size * patch_size)",
     {"patch_embed_equals_conv2d", "patchify_matches_unfold", "patchify_orders_patches_row_by_row"}),
    ("08_vision.ipynb", "_patchify = patchify\ndef patchify(images, patch_size):  # flattens each patch channel last, (P, P, C)\n"
                        "    b, c, p = images.shape[0], images.shape[1], patch_size\n"
                        "    return _patchify(images, p).unflatten(-1, (c, p, p)).permute(0, 1, 3, 4, 2).flatten(2)",
     {"patch_embed_equals_conv2d", "patchify_matches_unfold"}),
    ("08_vision.ipynb", "_patchify = patchify\ndef patchify(images, patch_size):  # column by column\n    c, p = images.shape[1], patch_size\n"
                        "    return _patchify(images.transpose(-1, -2), p).unflatten(-1, (c, p, p)).transpose(-1, -2).flatten(2)",
     {"patchify_matches_unfold", "patchify_orders_patches_row_by_row"}),
    ("08_vision.ipynb", "def patchify(images, patch_size):  # unfold alone: a ragged edge is dropped without a word\n"
                        "    return F.unfold(images, patch_size, stride=patch_size).transpose(1, 2)",
     {"patchify_refuses_a_ragged_image"}),
    ("08_vision.ipynb", "def patch_embed(images, weight, bias, patch_size):  # forgets the bias\n"
                        "    return F.linear(patchify(images, patch_size), weight.flatten(1))",
     {"patch_embed_adds_the_bias"}),
    ("08_vision.ipynb", "def add_class_token(patches, class_token, positions):  # the class token last\n"
                        "    return torch.cat([patches, class_token.expand(patches.shape[0], 1, -1)], dim=1) + positions",
     {"add_class_token_puts_it_first", "vit_forward_at_another_shape", "vit_forward_matches_the_library"}),
    ("08_vision.ipynb", "def add_class_token(patches, class_token, positions):  # positions on the patches only\n"
                        "    return torch.cat([class_token.expand(patches.shape[0], 1, -1), patches + positions[1:]], dim=1)",
     {"add_class_token_puts_it_first", "vit_forward_matches_the_library"}),
    ("08_vision.ipynb", "def vit_forward(images, weights, blocks, patch_size, eps=1e-5):  # no ln_pre\n"
                        "    x = add_class_token(patch_embed(images, weights['patch'], None, patch_size), weights['class_token'], weights['positions'])\n"
                        "    for block in blocks: x = block(x)\n"
                        "    return F.layer_norm(x[:, 0], (x.shape[-1],), weights['ln_post.weight'], weights['ln_post.bias'], eps) @ weights['proj']",
     {"vit_forward_at_another_shape", "vit_forward_matches_the_library"}),
    ("08_vision.ipynb", "def vit_forward(images, weights, blocks, patch_size, eps=1e-5):  # pools the mean of every token\n"
                        "    x = add_class_token(patch_embed(images, weights['patch'], None, patch_size), weights['class_token'], weights['positions'])\n"
                        "    x = F.layer_norm(x, (x.shape[-1],), weights['ln_pre.weight'], weights['ln_pre.bias'], eps)\n"
                        "    for block in blocks: x = block(x)\n"
                        "    return F.layer_norm(x.mean(1), (x.shape[-1],), weights['ln_post.weight'], weights['ln_post.bias'], eps) @ weights['proj']",
     {"vit_forward_at_another_shape", "vit_forward_matches_the_library"}),
    ("08_vision.ipynb", "def resize_positions(positions, new_grid):  # align_corners=True\n"
                        "    g, d = math.isqrt(len(positions) - 1), positions.shape[1]\n"
                        "    grid = F.interpolate(positions[1:].reshape(1, g, g, d).permute(0, 3, 1, 2), size=tuple(new_grid), mode='bicubic', align_corners=True)\n"
                        "    return torch.cat([positions[:1], grid.permute(0, 2, 3, 1).reshape(-1, d)])",
     {"resize_positions_matches_bicubic_interpolation", "resize_positions_to_a_rectangle"}),
    ("08_vision.ipynb", "def resize_positions(positions, new_grid):  # bilinear\n"
                        "    g, d = math.isqrt(len(positions) - 1), positions.shape[1]\n"
                        "    grid = F.interpolate(positions[1:].reshape(1, g, g, d).permute(0, 3, 1, 2), size=tuple(new_grid), mode='bilinear', antialias=True)\n"
                        "    return torch.cat([positions[:1], grid.permute(0, 2, 3, 1).reshape(-1, d)])",
     {"resize_positions_matches_bicubic_interpolation", "resize_positions_to_a_rectangle"}),
    ("08_vision.ipynb", "def resize_positions(positions, new_grid):  # reshapes (g·g, D) straight to (1, D, g, g): channels and places mixed\n"
                        "    g, d = math.isqrt(len(positions) - 1), positions.shape[1]\n"
                        "    grid = F.interpolate(positions[1:].reshape(1, d, g, g), size=tuple(new_grid), mode='bicubic', align_corners=False, antialias=True)\n"
                        "    return torch.cat([positions[:1], grid.reshape(-1, d)])",
     {"resize_positions_matches_bicubic_interpolation", "resize_positions_to_a_rectangle"}),
    ("08_vision.ipynb", "_resize = resize_positions\ndef resize_positions(positions, new_grid):  # (columns, rows)\n    h, w = new_grid\n"
                        "    return _resize(positions, (w, h))",
     {"resize_positions_to_a_rectangle"}),
    ("08_vision.ipynb", "_resize = resize_positions\ndef resize_positions(positions, new_grid):  # drops the class token's row\n"
                        "    return _resize(positions, new_grid)[1:]",
     {"resize_positions_keeps_the_class_token", "resize_positions_matches_bicubic_interpolation", "resize_positions_to_a_rectangle",
      "resize_positions_to_the_same_grid_changes_nothing"}),
    ("10_audio.ipynb", "def hann_window(n):  # symmetric: divides by n - 1\n    return torch.hann_window(n, periodic=False, dtype=torch.float64)",
     {"hann_window_is_periodic", "power_spectrum_matches_torch_stft"}),
    ("10_audio.ipynb", "def frames(x, n_fft, hop):  # pads with zeros\n    return F.pad(x, (n_fft // 2, n_fft // 2)).unfold(-1, n_fft, hop)",
     {"frames_pad_by_reflection", "power_spectrum_matches_torch_stft"}),
    ("10_audio.ipynb", "def frames(x, n_fft, hop):  # no padding: the first frame starts at sample 0\n    return x.unfold(-1, n_fft, hop)",
     {"frames_pad_by_reflection", "power_spectrum_matches_torch_stft", "power_spectrum_of_a_whisper_clip"}),
    ("10_audio.ipynb", "def power_spectrum(x, n_fft, hop):  # the magnitude, not the power\n"
                       "    return torch.fft.rfft(frames(x, n_fft, hop) * hann_window(n_fft).to(x.dtype), dim=-1).abs().transpose(-1, -2)",
     {"power_spectrum_matches_torch_stft", "power_spectrum_of_a_whisper_clip"}),
    ("10_audio.ipynb", "def power_spectrum(x, n_fft, hop):  # frames first, frequencies last\n"
                       "    return torch.fft.rfft(frames(x, n_fft, hop) * hann_window(n_fft).to(x.dtype), dim=-1).abs().square()",
     {"power_spectrum_matches_torch_stft", "power_spectrum_of_a_whisper_clip"}),
    ("10_audio.ipynb", "def hz_to_mel(f):  # the HTK formula\n    return 2595 * torch.log10(1 + torch.as_tensor(f, dtype=torch.float64) / 700)\n"
                       "def mel_to_hz(m):\n    return 700 * (10 ** (torch.as_tensor(m, dtype=torch.float64) / 2595) - 1)",
     {"hz_to_mel_is_slaney", "mel_to_hz_inverts_it", "mel_filterbank_matches_librosa", "mel_filterbank_honours_fmin_and_fmax"}),
    ("10_audio.ipynb", "_mel = mel_filterbank\ndef mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):  # no Slaney norm\n"
                       "    w = _mel(sample_rate, n_fft, n_mels, fmin, fmax)\n    return w / w.amax(1, keepdim=True)",
     {"mel_filterbank_matches_librosa", "mel_filterbank_honours_fmin_and_fmax"}),
    ("10_audio.ipynb", "_mel = mel_filterbank\ndef mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):  # ignores the band limits\n"
                       "    return _mel(sample_rate, n_fft, n_mels)",
     {"mel_filterbank_honours_fmin_and_fmax"}),
    ("10_audio.ipynb", "def mel_filterbank(sample_rate, n_fft, n_mels, fmin=0.0, fmax=None):  # edges evenly spaced in Hz, not in mels\n"
                       "    fmax = sample_rate / 2 if fmax is None else fmax\n    bins = torch.fft.rfftfreq(n_fft, 1 / sample_rate, dtype=torch.float64)\n"
                       "    edges = torch.linspace(fmin, fmax, n_mels + 2, dtype=torch.float64)\n"
                       "    rising = (bins - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]\n"
                       "    falling = (edges[2:, None] - bins) / (edges[2:] - edges[1:-1])[:, None]\n"
                       "    return torch.minimum(rising, falling).clamp(min=0) * (2 / (edges[2:] - edges[:-2]))[:, None]",
     {"mel_filterbank_matches_librosa", "mel_filterbank_honours_fmin_and_fmax"}),
    ("10_audio.ipynb", "def overlap_add(frames, hop):  # overwrites where frames overlap\n    n_frames, n = frames.shape[-2:]\n"
                       "    out = frames.new_zeros(*frames.shape[:-2], (n_frames - 1) * hop + n)\n"
                       "    for i in range(n_frames): out[..., i * hop:i * hop + n] = frames[..., i, :]\n    return out",
     {"overlap_add_matches_fold", "istft_matches_torch", "istft_inverts_the_stft"}),
    ("10_audio.ipynb", "def istft(spec, n_fft, hop):  # never divides by the overlap-added squared window\n"
                       "    window = torch.hann_window(n_fft, dtype=spec.real.dtype)\n"
                       "    signal = overlap_add(torch.fft.irfft(spec.transpose(-1, -2), n=n_fft) * window, hop)\n"
                       "    return signal[..., n_fft // 2:signal.shape[-1] - n_fft // 2]",
     {"istft_matches_torch", "istft_inverts_the_stft"}),
    ("10_audio.ipynb", "def istft(spec, n_fft, hop):  # keeps the padding at both ends\n"
                       "    window = torch.hann_window(n_fft, dtype=spec.real.dtype)\n"
                       "    signal = overlap_add(torch.fft.irfft(spec.transpose(-1, -2), n=n_fft) * window, hop)\n"
                       "    return signal / overlap_add(window.square().expand(spec.shape[-1], n_fft), hop).clamp(min=1e-11)",
     {"istft_matches_torch", "istft_inverts_the_stft"}),
    ("11_adapters.ipynb", "def add_special_tokens(special_ids, n_ids, tokens):  # new tokens first: every old id moves\n"
                          "    new = [t for t in dict.fromkeys(tokens) if t not in special_ids]\n"
                          "    return {t: n_ids - len(special_ids) + i for i, t in enumerate(new + list(special_ids))}",
     {"new_special_tokens_take_the_next_ids", "known_and_repeated_tokens_are_added_once"}),
    ("11_adapters.ipynb", "def add_special_tokens(special_ids, n_ids, tokens):  # a known token gets a second id\n"
                          "    out = dict(special_ids)\n    for i, t in enumerate(dict.fromkeys(tokens)): out[t] = n_ids + i\n    return out",
     {"known_and_repeated_tokens_are_added_once"}),
    ("11_adapters.ipynb", "import torch\nimport torch.nn.functional as F\n"
                          "def gated_projector(features, up_weight, up_bias, down_weight, down_bias, gate):  # ReLU\n"
                          "    return torch.tanh(gate) * F.linear(F.relu(F.linear(features, up_weight, up_bias)), down_weight, down_bias)",
     {"gated_projector_matches_linear_gelu_linear"}),
    ("11_adapters.ipynb", "import torch\nimport torch.nn.functional as F\n"
                          "def gated_projector(features, up_weight, up_bias, down_weight, down_bias, gate):  # a sigmoid gate: half open at 0\n"
                          "    return torch.sigmoid(gate) * F.linear(F.gelu(F.linear(features, up_weight, up_bias)), down_weight, down_bias)",
     {"gated_projector_matches_linear_gelu_linear", "a_closed_gate_gives_exactly_zero"}),
    ("11_adapters.ipynb", "import torch\n"
                          "def splice(embeddings, ids, placeholder_id, prefix):  # replaces the placeholders' embeddings\n"
                          "    out = embeddings.clone()\n    out[ids == placeholder_id] = prefix.reshape(-1, prefix.shape[-1])\n    return out",
     {"splice_adds_the_prefix_in_order", "splice_refuses_a_mismatched_prefix"}),
    ("11_adapters.ipynb", "import torch\n"
                          "def splice(embeddings, ids, placeholder_id, prefix):  # blocks to every row in turn, placeholders or not; no checks\n"
                          "    out = embeddings.clone()\n    slots = ids == placeholder_id\n"
                          "    for row in range(len(prefix)): out[row, slots[row]] += prefix[row, :int(slots[row].sum())]\n    return out",
     {"splice_adds_the_prefix_in_order", "splice_refuses_a_mismatched_prefix"}),
    ("11_adapters.ipynb", "import torch\n"
                          "def prefix_free_targets(ids, targets, placeholder_ids):  # only where a placeholder is read\n"
                          "    return targets.masked_fill(torch.isin(ids, torch.tensor(placeholder_ids)), -100)",
     {"no_loss_where_a_placeholder_is_read_or_predicted"}),
]


@pytest.mark.parametrize("solution, mutant, must_fail", MUTANTS, ids=lambda v: v.splitlines()[0][:40] if isinstance(v, str) else None)
def test_mutant_loses_points(tmp_path, solution, mutant, must_fail):
    report = grade(with_cells(tmp_path, solution, mutant))
    assert must_fail <= failed(report) and report.score < report.max_score, report.to_text()


def test_hangs_exits_floods_and_interrupts_score_zero_alone(tmp_path):
    escape = tmp_path/"escaped.txt"
    path = with_cells(tmp_path, "02_tokenizer.ipynb",
        "def merge(ids, pair, idx):\n    while True: pass",
        "import sys\ndef train_bpe(text, vocab_size): sys.exit(0)",
        "def decode(ids, merges):\n    while True: print('flood' * 10_000)",
        "raise KeyboardInterrupt('while defining')",
        f"open({str(escape)!r}, 'w').write('escaped')",
        "while True: pass  # a cell that never finishes is skipped",
        "blob = bytearray(16 * 2**30)  # over the memory limit")
    report = grade(path, timeout=3)
    assert {t.name for t in report.tests if t.passed} == {"get_stats_counts_adjacent_pairs", "get_stats_counts_overlapping_runs"}, report.to_text()
    feedback = {t.name: t.feedback for t in report.tests}
    assert "still running after 3 s" in feedback["merge_replaces_every_pair"]
    assert "larger than" in feedback["decode_replaces_invalid_utf8"]
    train = feedback["train_bpe_learns_reference_merges"]  # a probe error lists the cells that failed to run
    assert all(s in train for s in ("SystemExit", "KeyboardInterrupt", "sandbox: writing", "skipped", "MemoryError")), train
    assert not escape.exists()


def test_sandbox_refuses_writes_deletes_and_processes_outside(tmp_path):
    victim = tmp_path/"victim.txt"
    victim.write_text("intact")
    made = [tmp_path/"open.txt", tmp_path/"pathlib.txt", tmp_path/"touched.txt"]
    path = with_cells(tmp_path, "02_tokenizer.ipynb",
        f"import subprocess\nsubprocess.run(['touch', {str(made[2])!r}])",
        "import os\ndef get_stats(ids): os._exit(0)",
        "def train_bpe(text, vocab_size): raise KeyboardInterrupt",
        f"import os, pathlib\ndef decode(ids, merges):\n    try: os.remove({str(victim)!r})\n    except OSError: pass\n"
        f"    try: open({str(made[0])!r}, 'w').write('x')\n    except OSError: pass\n"
        f"    pathlib.Path({str(made[1])!r}).write_text('x')\n    return 'that cat sat on a hat ☕'")
    report = grade(path)
    assert {t.name for t in report.tests if t.passed} == {"merge_replaces_every_pair", "merge_replaces_a_pair_at_the_end", "merge_does_not_overlap"}, report.to_text()
    feedback = {t.name: t.feedback for t in report.tests}
    assert "sandbox: writing" in feedback["decode_inverts_encode"]
    assert "ended before the test finished" in feedback["get_stats_counts_adjacent_pairs"]
    assert "KeyboardInterrupt" in feedback["train_bpe_learns_reference_merges"]
    assert "sandbox: subprocess.Popen" in feedback["decode_inverts_encode"]
    assert victim.read_text() == "intact" and not any(p.exists() for p in made)


def test_fake_report_text_cannot_change_the_json(tmp_path):
    fake = json.dumps({"score": 100, "max_score": 100, "tests": []})
    path = with_cells(tmp_path, "02_tokenizer.ipynb",
        f"print({fake!r})\nprint('PASS 2/2 encode_matches_reference')",
        f"import sys\nclass Sneaky(list):\n    def __eq__(self, other): return True\n"
        f"def encode(text, merges):\n    print({fake!r}); print({fake!r}, file=sys.stderr)\n    return Sneaky([1, 2, 3])")
    r = subprocess.run([WAKEA, "grade", str(path), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr   # below full marks: a failing exit, the report still printed
    report = json.loads(r.stdout)  # exactly one JSON object, nothing else on stdout
    assert set(report) >= {"score", "max_score", "tests"} and report["max_score"] == 12
    encode = next(t for t in report["tests"] if t["name"] == "encode_matches_reference")
    assert not encode["passed"] and encode["points"] == 0 and encode["max_points"] == 2
    assert report["score"] == 12 - 2 - 1  # encode and the round trip that uses it
    assert all(set(t) == {"name", "points", "max_points", "passed", "feedback"} for t in report["tests"])


HELD_OUT = '''
from wakea_edu.grading import graded, require

@graded(points=3)
def merge_on_unseen_ids(learner):
    "merge on ids the exercise never showed."
    return learner.merge([7, 7, 7, 8, 7, 7], (7, 7), 300)

@merge_on_unseen_ids.check
def _(ids): require(ids == [300, 7, 8, 300], f"got {ids}")

@graded(points=1)
def get_stats_of_nothing(learner):
    "get_stats([]) is empty; this instructor wants None (so every solution fails it)."
    return learner.get_stats([])

@get_stats_of_nothing.check
def _(stats): require(stats is None, f"got {stats}")
'''


def test_held_out_tests_are_added(tmp_path, capsys):
    (tmp_path/"held_out.py").write_text(HELD_OUT)
    assert main(["grade", str(SOLUTIONS["02_tokenizer.ipynb"]), "--tests", str(tmp_path), "--json"]) == 1  # one held-out test fails
    report = json.loads(capsys.readouterr().out)
    names = [t["name"] for t in report["tests"]]
    assert names[-2:] == ["held_out:merge_on_unseen_ids", "held_out:get_stats_of_nothing"]
    assert report["max_score"] == 12 + 4 and report["score"] == 12 + 3


@pytest.mark.parametrize("args, needle", [
    (["grade", "42"], "chapter 42"),
    (["grade", "no_such.ipynb"], "no_such.ipynb: notebook not found"),
    (["grade", "corrupt"], "corrupt.ipynb: not a readable notebook"),
    (["grade", "00", "--tests", "no_such_dir"], "no_such_dir: held-out tests folder not found"),
    (["exercises", "build", "--solutions", "empty"], "empty: no solution notebooks"),
])
def test_bad_targets_are_named(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path/"exercises").mkdir()
    (tmp_path/"exercises"/"00_core.ipynb").write_bytes(SOLUTIONS["00_core.ipynb"].read_bytes())
    (tmp_path/"corrupt.ipynb").write_text("{not json")
    (tmp_path/"empty").mkdir()
    args = [a.replace("corrupt", str(tmp_path/"corrupt.ipynb")) for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.startswith("wakea-edu: error:")


@pytest.mark.parametrize("name", SOLUTIONS)
def test_solution_runs_top_to_bottom(tmp_path, name):
    """Every self-check cell passes on the solution (the Colab install cell is skipped: it is IPython, and Colab-only),
    and its last cell, `grade_here`, grades the saved notebook beside it to full marks."""
    nb = nbformat.read(SOLUTIONS[name], as_version=4)
    (tmp_path/name).write_bytes(SOLUTIONS[name].read_bytes())   # the saved notebook, where grade_here looks
    code = "\n\n".join(c.source for c in nb.cells if c.cell_type == "code" and "#| hide" not in c.source)
    r = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, cwd=tmp_path, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    assert re.search(r"score (\d+)/\1 \(100%\)", r.stdout), r.stdout[-1500:]


@pytest.mark.parametrize("flags, needle", [
    (["--timeout", "inf"], "timeout must be"), (["--timeout", "-1"], "timeout must be"), (["--timeout", "nan"], "timeout must be"),
    (["--timeout", "0"], "timeout must be"), (["--jobs", "-1"], "jobs must be"), (["--jobs", "0"], "jobs must be"),
])
def test_out_of_range_flags_are_one_line(capsys, flags, needle):
    assert main(["grade", str(SOLUTIONS["03_attention.ipynb"]), *flags]) == 1
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and err.startswith("wakea-edu: error:")


MISSHAPEN = {
    "source is a number": lambda nb: nb["cells"][0].update(source=42),
    "cell without source": lambda nb: nb["cells"][0].pop("source"),
    "source list of numbers": lambda nb: nb["cells"][0].update(source=[1, 2]),
    "wakea metadata is a string": lambda nb: nb["metadata"].update(wakea="02"),
    "chapter is a number": lambda nb: nb["metadata"].update(wakea={"chapter": 2}),
    "cells is an object": lambda nb: nb.update(cells={"a": 1}),
    "a cell is a string": lambda nb: nb["cells"].__setitem__(0, "text"),
}


@pytest.mark.parametrize("damage", MISSHAPEN)
def test_misshapen_notebooks_are_one_line(tmp_path, capsys, damage):
    nb = {"cells": [{"cell_type": "code", "id": "a1", "source": "#| graded\nx = 1", "metadata": {}, "outputs": [],
                     "execution_count": None}], "metadata": {"wakea": {"chapter": "02"}}, "nbformat": 4, "nbformat_minor": 5}
    MISSHAPEN[damage](nb)
    (tmp_path/"02_bad.ipynb").write_text(json.dumps(nb))
    assert main(["grade", str(tmp_path/"02_bad.ipynb")]) == 1
    err = capsys.readouterr().err
    assert "02_bad.ipynb" in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_output_over_the_cap_never_passes(tmp_path):
    "One print of 1.5 MB, then the right answer: the run was cut, so the test fails and says why."
    path = with_cells(tmp_path, "02_tokenizer.ipynb",
        "_honest_get_stats = get_stats\ndef get_stats(ids):\n    print('x' * 1_500_000)\n    return _honest_get_stats(ids)")
    feedback = {t.name: (t.passed, t.feedback) for t in grade(path).tests}
    passed, why = feedback["get_stats_counts_adjacent_pairs"]
    assert not passed and "larger than 1,048,576 bytes" in why


def test_exit_code_says_full_marks_or_not(exercises, capsys):
    assert main(["grade", str(SOLUTIONS["03_attention.ipynb"])]) == 0
    capsys.readouterr()
    assert main(["grade", str(exercises["03_attention.ipynb"]), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)   # the report is printed all the same
    assert report["score"] == 0 and report["max_score"] == 12


def test_grade_without_nbformat_says_what_to_install(monkeypatch, capsys):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nbformat" else real(name, *a))
    assert main(["grade", "03"]) == 1
    err = capsys.readouterr().err
    assert "pip install 'wakea-edu[grade]'" in err and err.count("\n") == 1


def test_grade_here_reads_the_open_colab_tab(monkeypatch, capsys):
    "On Colab the open notebook is not a file: grade_here asks Colab for its contents and grades those."
    import types
    from wakea_edu.grading import grade_here
    tab = json.loads(SOLUTIONS["03_attention.ipynb"].read_text())
    message = types.SimpleNamespace(blocking_request=lambda request, timeout_sec: {"ipynb": tab} if request == "get_ipynb" else None)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.SimpleNamespace(_message=message))
    report = grade_here("03")
    assert report.score == report.max_score == 12 and "score 12/12 (100%)" in capsys.readouterr().out
