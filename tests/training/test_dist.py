"""dist.py: where a process stands in the job is read once from torchrun's variables; the loop's collectives are the
identity on a single process (the two-process behaviour is test_engine's DDP run)."""

from __future__ import annotations

import pytest
import torch

from timm_uscl.training import dist


def test_detect_reads_rank_world_and_local_gpu_from_torchruns_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert dist.detect("auto") == dist.Process(rank=3, world=4, device=torch.device("cuda", 1))
    assert dist.detect("cpu") == dist.Process(rank=3, world=4, device=torch.device("cpu"))


def test_a_single_process_is_rank_zero_on_the_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "2")  # a stray variable without a job around it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dist.detect("auto") == dist.Process(rank=0, world=1, device=torch.device("cpu"))


def test_the_loops_collectives_are_the_identity_on_a_single_process() -> None:
    process = dist.Process(rank=0, world=1, device=torch.device("cpu"))
    dist.start_group(process)  # no group for one process
    assert not dist.is_distributed()
    assert dist.any_rank(torch.tensor(True)) and not dist.any_rank(torch.tensor(False))
    assert dist.every_rank(True, process.device) and not dist.every_rank(False, process.device)
    assert dist.gather_objects({"a": 1}) == [{"a": 1}]
    assert dist.broadcast_object("x") == "x"
    module = torch.nn.BatchNorm1d(2)
    dist.broadcast_buffers(module)
    assert module.running_mean is not None and torch.equal(module.running_mean, torch.zeros(2))
    dist.stop_group()
