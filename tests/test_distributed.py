"""Training a fastconv model under DistributedDataParallel: two processes (gloo, the CPU, the
interpreter) take three SGD steps on halves of each batch and end with the parameters of one
process that trained on the whole batches.

The model has no batch norm: its statistics over half a batch differ from those over the whole
one, so only SyncBatchNorm (CUDA only) would make the two runs comparable. Everything runs in
float64, so the one difference left, the order in which the gradient is summed (all-reduce of
two halves against one sum over the batch), is far below the tolerance. ATen's convolution
raises in every process: the gradients DDP all-reduces are fastconv's.
"""
import os

os.environ["TRITON_INTERPRET"] = "1"  # the spawned workers import this module before triton

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn as nn  # noqa: E402

import fastconv  # noqa: E402
from interpreter_speed import whole_model  # noqa: E402
from helpers import aten_forbidden  # noqa: E402

WORLD_SIZE = 2
STEPS = 3
BATCH = 4  # the whole batch of a step; each process takes BATCH // WORLD_SIZE of it


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        fastconv.nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
        fastconv.nn.Conv2d(6, 4, 3, stride=2, groups=2), nn.ReLU(),      # grouped
        fastconv.nn.Conv2d(4, 4, 3, padding=1, groups=4),                 # depthwise
        nn.Flatten(), nn.Linear(4 * 3 * 2, 5),
    ).double()


def _batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 3, 7, 5, generator=g, dtype=torch.float64),
             torch.randint(0, 5, (BATCH,), generator=g)) for _ in range(STEPS)]


def _train(model: nn.Module, batches) -> None:
    # lr large enough that three steps move every parameter well beyond rounding
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for x, y in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def _worker(rank: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD_SIZE)
    try:
        model = nn.parallel.DistributedDataParallel(_model())
        share = BATCH // WORLD_SIZE
        mine = [(x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share])
                for x, y in _batches()]
        with aten_forbidden(), whole_model():
            _train(model, mine)
        if rank == 0:
            torch.save(model.module.state_dict(), out_file)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    out_file = tmp_path / "ddp_state.pt"
    workers = mp.spawn(_worker, args=(str(tmp_path / "init"), str(out_file)),
                       nprocs=WORLD_SIZE, join=False)
    try:
        # the single-process run, while the workers start
        model = _model()
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        with aten_forbidden(), whole_model():
            _train(model, _batches())
        single = model.state_dict()
    finally:
        while not workers.join():  # raises, with its traceback, if a worker failed
            pass
    ddp_state = torch.load(out_file)

    assert ddp_state.keys() == single.keys()
    for key, value in single.items():
        assert not torch.allclose(value, initial[key]), f"{key} did not train"
        torch.testing.assert_close(ddp_state[key], value, rtol=1e-10, atol=1e-12,
                                   msg=lambda m: f"{key}: {m}")
