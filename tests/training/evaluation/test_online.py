"""Online evaluation (issue 11.4): the trainer's every-N-epochs probe of its current backbone."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import timm
import torch

from timm_uscl.training.evaluation import decoding
from timm_uscl.training.evaluation.online import OnlineEvaluator, knn_predict, ridge_predict


@pytest.fixture(scope="module")
def frames_dir(
    tmp_path_factory: pytest.TempPathFactory, fixture_frames: dict[str, list[np.ndarray]], write_png: Callable
) -> Path:
    top = tmp_path_factory.mktemp("online")
    for label, frames in fixture_frames.items():
        for i, f in enumerate(frames):
            write_png(top / label / f"{i:02d}.png", f)
    return top


def test_knn_votes_are_cosine_weighted() -> None:
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    test = torch.tensor([[0.1, 1.0], [1.0, 0.2], [0.6, 0.5]])
    assert knn_predict(test, train, labels, num_classes=2, k=1).tolist() == [1, 0, 0]
    # k=3 around a point nearest to class 1: near-equal votes (high temperature) let the two class-0 neighbours win,
    # sharp votes (low temperature) let the nearest neighbour's similarity decide
    point = torch.tensor([[0.5, 0.6]])
    assert knn_predict(point, train, labels, num_classes=2, k=3, temperature=10.0).tolist() == [0]
    assert knn_predict(point, train, labels, num_classes=2, k=3, temperature=0.01).tolist() == [1]


def test_online_evaluation_scores_a_backbone_and_leaves_it_as_it_was(
    frames_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evaluator = OnlineEvaluator(str(frames_dir), image_size=32, mean=0.18, std=0.24)
    torch.manual_seed(0)
    model: Any = timm.create_model("resnet18", num_classes=0).train()
    model.layer1.eval()  # a mixed train/eval state is restored module by module
    before = copy.deepcopy(model.state_dict())

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again: the evaluator decodes its data once, when built")

    monkeypatch.setattr(decoding, "read_frames", refuse)
    monkeypatch.setattr(decoding, "_load_image", refuse)
    metrics = evaluator(model)
    assert set(metrics) == {"knn_acc", "linear_acc"} and all(0.0 <= v <= 1.0 for v in metrics.values())
    assert model.training and not model.layer1.training and model.layer2.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # no BN statistics moved
    assert all(p.grad is None for p in model.parameters())
    assert evaluator(model) == metrics  # deterministic


def test_online_evaluation_of_a_builtin_task(synthetic_root: Path) -> None:
    evaluator = OnlineEvaluator("pocus", data_root=synthetic_root, image_size=32, frames_per_video=2, linear=False)
    metrics = evaluator(timm.create_model("resnet18", num_classes=0))
    assert set(metrics) == {"knn_acc"} and 0.0 <= metrics["knn_acc"] <= 1.0
    assert evaluator.num_rows == 30


def test_online_evaluation_refuses_a_segmentation_task(synthetic_root: Path) -> None:
    from timm_uscl.training.errors import EvaluationError

    with pytest.raises(EvaluationError, match="busi_seg"):
        OnlineEvaluator("busi_seg", data_root=synthetic_root)


def test_the_ridge_probe_separates_separable_classes() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 16, generator=gen) * 4
    labels = torch.arange(3).repeat(20)
    feats = centres[labels] + torch.randn(60, 16, generator=gen)
    assert torch.equal(ridge_predict(feats[:30], feats[30:], labels[30:], num_classes=3), labels[:30])
