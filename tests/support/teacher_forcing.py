"""Prompts read in one pass and decoded together along given answers (teacher forcing): how
a batch's numbers compare with each prompt's alone."""

from __future__ import annotations

import torch

from engine.native.model import NativeDecoder


def greedy(model: NativeDecoder, prompt: list[int], count: int) -> list[int]:
    """The prompt's greedy answer of `count` tokens, alone."""
    cache = model.new_cache(len(prompt) + count)
    answer: list[int] = []
    with torch.inference_mode():
        logits = model.logits(model.read_prompts([(torch.tensor(prompt), cache)]))[0]
        while len(answer) < count:
            answer.append(int(logits.argmax()))
            logits = model.decode(torch.tensor(answer[-1:]), [cache])[0]
    return answer


def forced_logits(
    model: NativeDecoder, prompts: list[list[int]], answers: list[list[int]]
) -> list[torch.Tensor]:
    """All prompts read in one pass, then decoded as one batch, each fed its own answer:
    per prompt, the logits before each answer token [len(answer), vocab]."""
    caches = [model.new_cache(len(p) + len(a)) for p, a in zip(prompts, answers, strict=True)]
    with torch.inference_mode():
        hidden = model.read_prompts(
            [(torch.tensor(p), cache) for p, cache in zip(prompts, caches, strict=True)]
        )
        steps = [model.logits(hidden)]
        for i in range(len(answers[0]) - 1):
            steps.append(model.decode(torch.tensor([a[i] for a in answers]), caches))
    return list(torch.stack(steps, dim=1).unbind(0))


def batch_agreement(
    model: NativeDecoder, prompts: list[list[int]], answers: list[list[int]], batch: int = 8
) -> tuple[float, bool]:
    """Top-1 agreement of prompts taken `batch` at a time with each alone, teacher-forced
    along the answers (all of one length); and whether every logit was bit-identical."""
    agreeing = total = 0
    identical = True
    for start in range(0, len(prompts), batch):
        group, forced = prompts[start : start + batch], answers[start : start + batch]
        together = forced_logits(model, group, forced)
        for prompt, answer, batched in zip(group, forced, together, strict=True):
            (alone,) = forced_logits(model, [prompt], [answer])
            agreeing += int((alone.argmax(-1) == batched.argmax(-1)).sum())
            total += len(answer)
            identical = identical and torch.equal(alone, batched)
    return agreeing / total, identical
