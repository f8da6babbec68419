"""Kill a process that saves a large checkpoint with SIGKILL at random moments: the path always loads, as the old contents
or the new, and the next save leaves no temporary file behind."""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from wakea_edu.core import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fork are POSIX")

TRIALS, MB, SEED = 24, 64, 0

# A zygote imports torch once (3 s) and forks a saver per trial, so that a trial costs a save, not an import. The saver
# alternates between two contents, "old" (every value 1) and "new" (every value 2), and never stops on its own.
ZYGOTE = r"""
import os, sys, time
import torch
torch.set_num_threads(1)   # no thread pool exists before the fork: the children start clean
from wakea_edu.core import atomic_write, save_checkpoint
path, mb = sys.argv[1], int(sys.argv[2])
n = mb * 2**20 // 4 // 4
contents = {tag: ({f"w{i}": torch.full((n,), float(value)) for i in range(4)} | {"tag": torch.tensor([value])}, {"tag": tag})
            for tag, value in (("old", 1), ("new", 2))}
start = time.perf_counter(); save_checkpoint(path, *contents["old"]); save_s = time.perf_counter() - start
start = time.perf_counter(); atomic_write(path + ".scratch", b"x" * mb * 2**20); write_s = time.perf_counter() - start
os.unlink(path + ".scratch")
print("ready", save_s, write_s, flush=True)
for line in sys.stdin:
    command, arg = line.split()
    if command == "go":
        pid = os.fork()
        if pid == 0:
            try:
                for i in range(int(arg), 10**9): save_checkpoint(path, *contents[("old", "new")[i % 2]])
            finally: os._exit(1)   # a saver that stops by itself fails the test: only SIGKILL may end it
        print("pid", pid, flush=True)
    elif command == "reap": print("reaped", os.waitpid(int(arg), 0)[1], flush=True)
"""


def temporaries(folder, name):
    return [n for n in os.listdir(folder) if n.startswith(f".{name}.tmp-")]


def test_a_killed_save_leaves_the_old_or_the_new_checkpoint(tmp_path):
    path, rng = tmp_path/"ckpt.safetensors", random.Random(SEED)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    zygote = subprocess.Popen([sys.executable, "-c", ZYGOTE, str(path), str(MB)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    seen, orphans, child, began = {"old": 0, "new": 0}, 0, None, time.perf_counter()

    def ask(command):
        zygote.stdin.write(command + "\n"); zygote.stdin.flush()
        reply = zygote.stdout.readline().split()
        assert reply, f"the zygote died (exit code {zygote.wait()})"
        return reply
    try:
        ready = zygote.stdout.readline().split()
        assert ready and ready[0] == "ready", "the zygote did not start"
        save_s, write_s = float(ready[1]), float(ready[2])
        for trial in range(TRIALS):
            child = int(ask(f"go {rng.randrange(2)}")[1])
            if trial % 2:   # odd trials: wait for the temporary file to appear, then kill during the write or the rename
                deadline = time.perf_counter() + 5 * save_s
                while not temporaries(tmp_path, path.name) and time.perf_counter() < deadline: time.sleep(0.0005)
                time.sleep(rng.uniform(0, 1.2 * write_s))
            else:           # even trials: at any moment of the next two saves
                time.sleep(rng.uniform(0, 2 * save_s))
            os.kill(child, signal.SIGKILL)
            status = int(ask(f"reap {child}")[1])
            child = None
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"the saver ended by itself (status {status})"
            orphans += bool(temporaries(tmp_path, path.name))
            tensors, meta = load_checkpoint(path)            # must load, checksum and all
            tag, value = meta["tag"], {"old": 1, "new": 2}[meta["tag"]]
            assert int(tensors["tag"]) == value and all(tensors[f"w{i}"][[0, -1]].tolist() == [value, value] for i in range(4))
            seen[tag] += 1
            save_checkpoint(path, tensors, meta)             # the next save: it removes what the killed one left
            assert os.listdir(tmp_path) == [path.name], os.listdir(tmp_path)
    finally:
        if child: os.kill(child, signal.SIGKILL)
        zygote.stdin.close()
        zygote.kill()
        zygote.wait()
    elapsed = time.perf_counter() - began
    print(f"{TRIALS} kills in {elapsed:.1f} s ({MB} MB checkpoint, a save takes {save_s:.2f} s): "
          f"{seen['old']} old, {seen['new']} new, {orphans} left a temporary file")
    assert orphans >= TRIALS // 8, "too few kills landed during a write: the test no longer tests the rename"
    assert seen["old"] and seen["new"], seen
