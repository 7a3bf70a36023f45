"""Run a fuzz target: with atheris (coverage-guided) when it is installed and ``--plain`` is not
given, else a plain-Python random driver (mutations of the seeds: byte flips, inserts, deletes,
splices, dictionary tokens) for ``--seconds`` or ``--iterations``. A failing input is written to
``--crashes`` (default ./fuzz-crashes/) and the run stops with exit 1."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
import traceback
from collections.abc import Callable


def mutate(rng: random.Random, data: bytes, seeds: list[bytes], tokens: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        choice = rng.random()
        at = rng.randint(0, len(out))
        if choice < 0.2 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randint(0, 7)
        elif choice < 0.35 and out:
            out[min(at, len(out) - 1)] = rng.randint(0, 255)
        elif choice < 0.5:
            out[at:at] = bytes(rng.randint(0, 255) for _ in range(rng.randint(1, 8)))
        elif choice < 0.65 and out:
            del out[at:at + rng.randint(1, 16)]
        elif choice < 0.85 and tokens:
            out[at:at] = rng.choice(tokens)
        elif seeds:
            other = rng.choice(seeds)
            cut = rng.randint(0, len(other))
            out[at:] = other[cut:] if rng.random() < 0.5 else other[:cut] + out[at:]
    return bytes(out[:8192])


def plain(target: Callable[[bytes], None], seeds: list[bytes], tokens: list[bytes], seconds: float,
          iterations: int, crashes: str, seed: int) -> int:
    rng = random.Random(seed)
    corpus = list(seeds) or [b""]
    end = time.monotonic() + seconds if seconds else None
    done = 0
    started = time.monotonic()
    while (end is None or time.monotonic() < end) and (not iterations or done < iterations):
        roll = rng.random()
        if roll < 0.05:
            data = bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 200)))
        else:
            data = mutate(rng, rng.choice(corpus), seeds, tokens)
        try:
            target(data)
        except Exception:
            os.makedirs(crashes, exist_ok=True)
            path = os.path.join(crashes, "crash-" + hashlib.sha1(data).hexdigest())
            with open(path, "wb") as handle:
                handle.write(data)
            print(f"input {done}: {data[:300]!r}\nwritten to {path}", file=sys.stderr)
            traceback.print_exc()
            return 1
        done += 1
        if rng.random() < 0.01 and len(corpus) < 4096:
            corpus.append(data)  # no coverage here: keep a few mutants to mutate further
        if done % 10000 == 0:
            print(f"#{done} {done / (time.monotonic() - started):.0f}/s", file=sys.stderr, flush=True)
    print(f"done: {done} inputs in {time.monotonic() - started:.0f}s, no failure", file=sys.stderr)
    return 0


def main(name: str, target: Callable[[bytes], None], seeds: list[bytes], tokens: list[bytes],
         finish: Callable[[], None] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=name, description=__doc__, add_help=True)
    parser.add_argument("--plain", action="store_true", help="the random driver even if atheris is installed")
    parser.add_argument("--seconds", type=float, default=0, help="plain driver: stop after this long")
    parser.add_argument("--iterations", type=int, default=0, help="plain driver: stop after this many inputs")
    parser.add_argument("--seed", type=int, default=None, help="plain driver: random seed")
    parser.add_argument("--crashes", default="fuzz-crashes", help="plain driver: where failing inputs go")
    parser.add_argument("--replay", nargs="*", default=None, help="run these input files once each, then exit")
    args, rest = parser.parse_known_args()
    try:
        if args.replay is not None:
            for path in args.replay:
                with open(path, "rb") as handle:
                    target(handle.read())
                print(f"{path}: passes")
            return
        try:
            import atheris
        except ImportError:
            atheris = None
        if args.plain or atheris is None:
            seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
            print(f"{name}: plain random driver, seed {seed}", file=sys.stderr)
            code = plain(target, seeds, tokens, args.seconds, args.iterations, args.crashes, seed)
            if code == 0 and finish is not None:
                finish()
            sys.exit(code)
        corpus_dir = None
        if not any(not a.startswith("-") for a in rest):  # no corpus directory given: the seeds
            import tempfile

            corpus_dir = tempfile.mkdtemp(prefix=f"{name}-corpus-")
            for i, seed_bytes in enumerate(seeds):
                with open(os.path.join(corpus_dir, f"seed{i}"), "wb") as handle:
                    handle.write(seed_bytes)
            rest.append(corpus_dir)
        atheris.Setup([sys.argv[0], *rest], target)
        atheris.Fuzz()
    finally:
        close = getattr(target, "close", None)
        if close:
            close()
