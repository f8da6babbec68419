"Chapter 10: TinyWorld's sounds are deterministic and say what happened; the spectrogram equals torch.stft, the filterbank librosa's; the encoder hears held-out combinations."
import numpy as np
import pytest
import torch

from wakea_edu.multimodal.audio import (AudioConfig, AudioEncoder, SoundTrainer, accuracy, frames, hann_window, hz_to_mel,
                                        log_mel_spectrogram, mel_filterbank, mel_to_hz, power_spectrum, sound_features,
                                        sound_labels, train_sound_classifier)
from wakea_edu.text.train import Trainer, TrainConfig
from wakea_edu.world.sound import CLIP_SAMPLES, SAMPLE_RATE, clip_seed, sounds, synthesize
from wakea_edu.world.tinyworld import MICRO_CONFIG, Event, TinyWorld, WorldConfig


# the chapter's target; measured at this CI size (torch 2.14, 1 thread) on the test split: result 0.985, material 0.976
# (the notebook's full run, twice the stories and 500 steps: 1.000 and 0.990)
CI_MIN_ACCURACY = 0.95


def stft_power(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    return torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft, dtype=x.dtype), return_complex=True).abs().square()


@pytest.mark.parametrize("n_fft, hop, length", [(400, 160, 8000), (64, 16, 1000), (256, 100, 3001), (33, 7, 500)])
def test_power_spectrum_equals_torch_stft(n_fft, hop, length):
    x = torch.randn(3, length, dtype=torch.float64, generator=torch.Generator().manual_seed(n_fft))
    assert (power_spectrum(x, n_fft, hop) - stft_power(x, n_fft, hop)).abs().max() <= 1e-5
    x32, ref32 = x.float(), stft_power(x.float(), n_fft, hop)
    assert (power_spectrum(x32, n_fft, hop) - ref32).abs().max() <= 1e-5 * ref32.max()   # float32: relative to the largest power
    one = power_spectrum(x[0], n_fft, hop)   # a single signal, and a batch of batches, keep their leading dimensions
    assert one.shape == (n_fft // 2 + 1, 1 + length // hop) and torch.allclose(power_spectrum(x[None], n_fft, hop)[0, 0], one)


def test_frames_and_window_are_stft_s():
    assert frames(torch.arange(10.0), 4, 3).tolist() == [[2, 1, 0, 1], [1, 2, 3, 4], [4, 5, 6, 7], [7, 8, 9, 8]]   # reflected, centred
    for n in (8, 15, 400):
        assert (hann_window(n, torch.float64) - torch.hann_window(n, dtype=torch.float64)).abs().max() <= 1e-12


MEL_CASES = [dict(sr=16000, n_fft=400, n_mels=80), dict(sr=16000, n_fft=512, n_mels=64, fmin=50.0, fmax=7000.0),
             dict(sr=22050, n_fft=2048, n_mels=128), dict(sr=8000, n_fft=256, n_mels=40, fmin=300.0), dict(sr=16000, n_fft=401, n_mels=40)]


@pytest.mark.parametrize("case", MEL_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_mel_filterbank_equals_librosa(case):
    librosa = pytest.importorskip("librosa")
    ours = mel_filterbank(case["sr"], case["n_fft"], case["n_mels"], case.get("fmin", 0.0), case.get("fmax"))
    assert ours.dtype == torch.float32
    assert (ours.double() - torch.from_numpy(librosa.filters.mel(**case)).double()).abs().max() <= 1e-6


def test_mel_scale_is_slaney_and_inverts():
    assert torch.allclose(hz_to_mel([0, 500, 1000, 6400]), torch.tensor([0, 7.5, 15, 42], dtype=torch.float64))
    f = torch.tensor([20.0, 999.9, 1000.0, 4321.0, 8000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f)


def test_log_mel_is_whispers_recipe_per_clip():
    librosa = pytest.importorskip("librosa")
    clips, _ = sounds(TinyWorld(), "val", limit=4)
    # float64: the recipes agree to rounding; float32: quiet bins just above the 80 dB floor carry float32's FFT noise into the log
    for dtype, atol in ((torch.float64, 1e-6), (torch.float32, 1e-3)):
        audio = torch.from_numpy(clips).to(dtype)
        filters = torch.from_numpy(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)).to(dtype)
        for clip, ours in zip(audio, log_mel_spectrogram(audio)):   # whisper.audio.log_mel_spectrogram, one clip at a time
            magnitudes = torch.stft(clip, 400, 160, window=torch.hann_window(400, dtype=dtype), return_complex=True)[..., :-1].abs() ** 2
            log_spec = torch.clamp(filters @ magnitudes, min=1e-10).log10()
            log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
            assert ours.shape == (80, 50) and ours.dtype == dtype and (ours - (log_spec + 4.0) / 4.0).abs().max() <= atol


def test_synthesiser_is_deterministic_and_independent_of_other_clips():
    world = TinyWorld()
    clips, events = sounds(world, "test")
    again, _ = sounds(TinyWorld(), "test", limit=7)   # a fresh world, fewer clips: the same bytes
    assert clips.dtype == np.float32 and clips.shape == (len(world.events("test")), CLIP_SAMPLES) and np.array_equal(again, clips[:7])
    i, j, event = world.events("test")[3]
    assert np.array_equal(synthesize(event, clip_seed(0, "test", i, j)), clips[3])
    assert not np.array_equal(synthesize(event, 1), synthesize(event, 2))   # the seed draws the noise and the details
    peaks = np.abs(clips).max(1)
    assert peaks.min() >= 0.5 - 1e-6 and peaks.max() <= 0.9 + 1e-6 and np.isfinite(clips).all()
    other = TinyWorld(WorldConfig(seed=1))   # the world's seed is part of each clip's seed
    i, j, event = other.events("test")[0]
    assert np.array_equal(sounds(other, "test", limit=1)[0][0], synthesize(event, clip_seed(1, "test", i, j)))
    assert clip_seed(1, "test", i, j) != clip_seed(0, "test", i, j)


def test_sounds_hold_out_the_stories_surfaces():
    world = TinyWorld()
    _, events = sounds(world, "test", limit=50)
    assert events == [e for _, _, e in world.events("test")][:50]
    assert not {e.surface for e in events} & set(world.surfaces["train"])


def spectral_centroid(clip: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(clip)) ** 2
    return float((np.fft.rfftfreq(len(clip), 1 / SAMPLE_RATE) * power).sum() / power.sum())


def test_size_sets_the_pitch_and_material_the_timbre():
    def clip(size="big", material="glass", result="clangs", seed=0):
        return synthesize(Event("Mia", "drop", size, "red", material, "cup", "in the yard", result), seed)
    # a tiny glass cup rings an octave above a big one (its partials are doubled), a huge one lower
    ratio = np.median([spectral_centroid(clip("tiny", seed=s)) / spectral_centroid(clip("big", seed=s)) for s in range(8)])
    assert 1.7 <= ratio <= 2.3, ratio
    assert spectral_centroid(clip("huge")) < spectral_centroid(clip("big"))
    assert spectral_centroid(clip(material="rubber", result="cracks")) * 3 < spectral_centroid(clip(material="glass", result="cracks"))


def test_bounces_are_repeated_thumps_and_clangs_ring_on():
    def clip(result, material, seed=0): return synthesize(Event("Mia", "drop", "big", "red", material, "plate", "in the yard", result), seed)
    bounce = np.abs(clip("bounces", "rubber")).reshape(50, -1).max(1)   # peak per 10 ms
    assert ((bounce[1:-1] > bounce[:-2]) & (bounce[1:-1] >= bounce[2:]) & (bounce[1:-1] > 0.1 * bounce.max())).sum() >= 4   # thumps
    def tail(c): return np.square(c[int(0.3 * SAMPLE_RATE):]).sum() / np.square(c[:int(0.2 * SAMPLE_RATE)]).sum()   # last 0.2 s / first 0.2 s
    assert min(tail(clip("clangs", "metal", s)) for s in range(4)) > 10 * max(tail(clip("dents", "metal", s)) for s in range(4))


def test_words_a_config_adds_still_sound():
    config = WorldConfig(**{**MICRO_CONFIG, "kinds": {"cup": ["stone"], "ball": ["rubber"]}, "sizes": ["vast"], "places": ["in a cave", "on the moon"],
                            "rules": {"*": {"drop": {"thuds": 1.0}, "heat": {"gets warm": 1.0}}}})
    world = TinyWorld(config)
    clips, events = sounds(world, "train", limit=20)
    assert np.isfinite(clips).all() and np.abs(clips).max(1).min() >= 0.5 - 1e-6
    assert {"thuds", "stone"} <= {e.result for e in events} | {e.material for e in events}
    assert sound_labels(world) == {"result": ["gets warm", "thuds"], "material": ["stone", "rubber"]}


def test_encoder_is_non_causal_and_shapes_follow_the_config():
    torch.manual_seed(0)
    encoder = AudioEncoder(AudioConfig(d_model=32, n_heads=2, n_layers=1)).eval()
    mel = torch.randn(2, 80, 50)
    out = encoder(mel)
    assert out.shape == (2, 25, 32)
    later = mel.clone()
    later[:, :, -1] += 1   # the last frame changes the first token: every token attends to the whole clip
    assert (encoder(later)[:, 0] - out[:, 0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="exceed max_frames"): encoder(torch.randn(1, 80, 51))


def test_sound_trainer_changes_only_the_loss():
    assert issubclass(SoundTrainer, Trainer)
    assert {name for name in vars(SoundTrainer) if not name.startswith("__")} == {"loss"}


@pytest.fixture(scope="module")
def trained():
    "The chapter's run at CI size: half the training stories and fewer steps than the notebook."
    world = TinyWorld(WorldConfig(stories={"train": 1000, "val": 100, "test": 200}))
    cfg = TrainConfig(steps=300, batch_size=64, lr=3e-3, warmup_steps=30, weight_decay=0.05, eval_every=300, eval_batches=2, ckpt_every=0)
    model, log = train_sound_classifier(world, cfg, device="cpu")
    return world, model, log


def test_encoder_reads_result_and_material_of_held_out_combinations(trained):
    world, model, log = trained
    features, targets = sound_features(world, "test")
    acc = accuracy(model, features, targets)
    assert acc["result"] >= CI_MIN_ACCURACY and acc["material"] >= CI_MIN_ACCURACY, acc
    assert log[-1]["loss"] < 0.3 * log[0]["loss"]


def test_a_run_repeats_exactly():
    world = TinyWorld()
    cfg = TrainConfig(steps=5, batch_size=16, warmup_steps=1, eval_every=5, eval_batches=1, ckpt_every=0)
    train, val = sound_features(world, "train", limit=64), sound_features(world, "val", limit=32)
    runs = [train_sound_classifier(world, cfg, AudioConfig(d_model=32, n_heads=2, n_layers=1), device="cpu", train=train, val=val)[1]
            for _ in range(2)]
    assert runs[0] == runs[1] and runs[0][-1]["step"] == 5
