"""Autotuning: bucketed keys, the measured winner reused, and the interpreter left untimed.

Timing needs a GPU; here the selection logic runs with an injected timer.
"""
import dataclasses

import torch

from fastconv.conv import autotune
from fastconv.conv.launch import conv_problem
from fastconv.conv.plan import Plan, config_table, gemm_split, plan_conv2d
from fastconv.ops.target import planning_for


def _problem(n, dtype=torch.float16, c=64, k=128, hw=28):
    return conv_problem((n, c, hw, hw), (k, c, 3, 3), (n, k, hw, hw), 1, dtype, (1, 1), (1, 1))


def test_batch_sizes_in_a_bucket_share_a_key():
    plan = plan_conv2d("fprop", _problem(8))
    # 28*28 pixels an image: batches 6..10 all give 4097..8192 GEMM rows
    keys = {autotune.tuning_key(plan, _problem(n)) for n in (6, 7, 8, 9, 10)}
    assert len(keys) == 1
    assert autotune.tuning_key(plan, _problem(8)) != autotune.tuning_key(plan, _problem(11))
    assert autotune.tuning_key(plan, _problem(8)) != autotune.tuning_key(plan, _problem(8, torch.bfloat16))


def test_candidates_are_the_plan_and_its_neighbours_in_the_compiled_table():
    pb = _problem(8)
    plan = plan_conv2d("wgrad", pb)
    table = config_table(plan.family, False)["wgrad"]["16"]
    for at, cfg in enumerate(table):
        options = autotune.candidates(dataclasses.replace(plan, config=cfg), pb, None)
        want = [cfg] + table[max(at - 1, 0):at] + table[at + 1:at + 2]
        assert [p.config for p in options] == want
        assert 2 <= len(options) <= 3 and all(p.split >= 1 for p in options)


def test_tuning_measures_once_per_bucket_and_keeps_the_fastest(monkeypatch):
    monkeypatch.setattr(autotune, "_BEST", {})
    pb = _problem(8)
    plan = plan_conv2d("fprop", pb)
    options = autotune.candidates(plan, pb, None)
    assert len(options) >= 2
    fastest = options[-1].config
    launched = []

    def launch(p: Plan):
        launched.append(p.config)

    def timer(fn):  # the last config is the fastest
        fn()
        return 1.0 if launched[-1] == fastest else 2.0

    chosen = autotune.tuned(plan, pb, None, launch, timer=timer)
    assert chosen.config == fastest and launched == [p.config for p in options]
    again = autotune.tuned(plan, _problem(9), None, launch, timer=timer)
    assert again.config == fastest and len(launched) == len(options)  # no second measurement


def test_interpreter_is_not_tuned():
    pb = _problem(2, torch.float32, c=16, k=16, hw=4)
    plan = plan_conv2d("fprop", pb)
    assert autotune.tuned(plan, pb, torch.device("cpu"), lambda p: None) is plan


@planning_for("sm_90")  # a GPU plan; nothing is launched
def test_split_k_is_timed_and_kept_per_problem(monkeypatch):
    """Each config is timed with the split-K it would run with, and the winner runs with the
    split of the problem at hand, not of the one measured first in its bucket."""
    monkeypatch.setattr(autotune, "_BEST", {})
    pb = _problem(1, c=512, k=512, hw=7)  # ResNet-50's 7x7 stage at batch 1: split
    plan = plan_conv2d("fprop", pb)
    assert plan.split > 1
    timed = []

    def timer(fn):
        fn()
        return 1.0

    chosen = autotune.tuned(plan, pb, None, lambda p: timed.append((p.config, p.split)),
                            timer=timer)
    assert timed == [(p.config, gemm_split("fprop", p.family, pb, p.config, None))
                     for p in autotune.candidates(plan, pb, None)]
    assert chosen.split == gemm_split("fprop", chosen.family, pb, chosen.config, None) > 1
    bigger = _problem(1, c=512, k=512, hw=8)  # 64 pixels: the bucket of 49
    assert autotune.tuning_key(plan, bigger) == autotune.tuning_key(plan, pb)
    again = autotune.tuned(plan, bigger, None, lambda p: timed.append(p), timer=timer)
    assert len(timed) == len(autotune.candidates(plan, pb, None))  # no second measurement
    assert again.config == chosen.config
    assert again.split == gemm_split("fprop", again.family, bigger, again.config, None)
