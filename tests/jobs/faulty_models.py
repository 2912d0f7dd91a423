"""Predictor loaders that inject faults, for the fault tests. Ray workers import them by name
("tests.jobs.faulty_models:..."), so they run inside real actor processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from structome.models.registry import load_predictor


class _Wrapped:
    def __init__(self, inner):
        self.inner = inner
        self.provenance = inner.provenance

    def set_chunk_size(self, chunk_size):
        self.inner.set_chunk_size(chunk_size)

    @property
    def reduced_precision(self):
        return self.inner.reduced_precision

    def full_precision(self):
        return self.inner.full_precision()


class OutOfMemoryAbove(_Wrapped):
    """Raises torch.OutOfMemoryError for any batch holding a sequence longer than the limit."""

    limit = int(os.environ.get("STRUCTOME_TEST_OOM_ABOVE", "60"))

    def predict(self, requests):
        if max(len(r.sequence) for r in requests) > self.limit:
            raise torch.OutOfMemoryError(f"injected: longer than {self.limit}")
        return self.inner.predict(requests)


class DieOnce(_Wrapped):
    """SIGKILLs its own process at its first prediction, once per build (a marker file remembers)."""

    def predict(self, requests):
        marker = Path(os.environ["STRUCTOME_TEST_DIE_MARKER"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.predict(requests)


class DieOnLength(_Wrapped):
    """SIGKILLs its own process whenever a batch holds a sequence of exactly this length: a poison shard."""

    length = int(os.environ.get("STRUCTOME_TEST_DIE_LENGTH", "0"))

    def predict(self, requests):
        if any(len(r.sequence) == self.length for r in requests):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.predict(requests)


class RaiseOnLength(_Wrapped):
    """Raises an unexpected error (not out-of-memory) whenever a batch holds a sequence of exactly this length."""

    length = int(os.environ.get("STRUCTOME_TEST_RAISE_LENGTH", "0"))

    def predict(self, requests):
        if any(len(r.sequence) == self.length for r in requests):
            raise RuntimeError(f"injected: length {self.length}")
        return self.inner.predict(requests)


class NanOnLength(_Wrapped):
    """The real model, whose raw output turns NaN for the sequences of exactly this length in a batch (the others
    stay as folded); with `only_reduced`, only while the trunk runs below fp32 (an fp16 overflow). Counts the
    model's forward calls."""

    def __init__(self, inner, length: int, only_reduced: bool = False):
        super().__init__(inner)
        self.length, self.only_reduced, self.forward_calls = length, only_reduced, 0
        forward = inner.model.forward

        def poisoned_forward(*args, **kwargs):
            self.forward_calls += 1
            output = forward(*args, **kwargs)
            if not self.only_reduced or inner.reduced_precision:
                rows = kwargs["attention_mask"].sum(dim=1) == self.length
                output["positions"][:, rows] = float("nan")
            return output

        inner.model.forward = poisoned_forward

    def predict(self, requests):
        return self.inner.predict(requests)


class HangOnce(_Wrapped):
    """Hangs (sleeps for an hour) in its first prediction, once per build (a marker file remembers): a GPU stuck
    in a kernel."""

    def predict(self, requests):
        marker = Path(os.environ["STRUCTOME_TEST_HANG_MARKER"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            time.sleep(3600)
        return self.inner.predict(requests)


def hang_once(name, weights, settings):
    return HangOnce(load_predictor(name, weights, settings))


def oom_above(name, weights, settings):
    return OutOfMemoryAbove(load_predictor(name, weights, settings))


def die_once(name, weights, settings):
    return DieOnce(load_predictor(name, weights, settings))


def die_on_length(name, weights, settings):
    return DieOnLength(load_predictor(name, weights, settings))


def raise_on_length(name, weights, settings):
    return RaiseOnLength(load_predictor(name, weights, settings))
