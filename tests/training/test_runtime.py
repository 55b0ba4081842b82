"""precision: auto follows the hardware; the choice is recorded, and a resume elsewhere cannot change it silently."""

from __future__ import annotations

import torch

from timm_uscl.training.config import load_config
from timm_uscl.training.runtime import cpu_flags, resolve_precision, resolve_threads

CPU = torch.device("cpu")


def test_auto_is_bf16_on_a_cpu_with_native_bf16_and_fp32_without_it():
    assert resolve_precision("auto", CPU, frozenset({"avx2", "avx512_bf16"})).name == "bf16"
    assert resolve_precision("auto", CPU, frozenset({"amx_bf16"})).name == "bf16"
    plain = resolve_precision("auto", CPU, frozenset({"avx2", "avx512f"}))
    assert plain.name == "fp32" and "emulated" in plain.reason


def test_an_explicit_precision_is_kept_whatever_the_hardware():
    assert resolve_precision("fp32", CPU, frozenset({"avx512_bf16"})).name == "fp32"
    assert resolve_precision("bf16", CPU, frozenset()).name == "bf16"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_zero_threads_means_every_core_this_process_may_use():
    assert resolve_threads(3) == 3
    assert resolve_threads(0) >= 1


def test_an_older_config_with_bf16_reads_as_a_precision():
    assert load_config("meta_uscl", overrides={"bf16": True}).precision == "bf16"
    assert load_config("meta_uscl", overrides={"bf16": False}).precision == "fp32"
    assert load_config("meta_uscl").precision == "auto"
    assert load_config("meta_uscl", overrides={"bf16": "true"}).precision == "bf16"  # --set bf16=true


def test_zero_threads_follows_omp_num_threads_and_shares_the_cores_among_local_ranks(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets for each of several processes
    assert resolve_threads(0) == 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "64")
    assert resolve_threads(0) == 1
    assert resolve_threads(5) == 5


def test_a_checkpoint_recorded_with_store_auto_resumes_as_what_auto_did_then(tmp_path):
    import dataclasses

    from timm_uscl.training.run_folder import check_resume_config

    config = load_config("meta_uscl", overrides={"store": "off", "device": "cpu"})
    saved = dataclasses.asdict(load_config("meta_uscl", overrides={"store": "auto", "device": "cpu"}))
    assert check_resume_config(saved, dataclasses.asdict(config), tmp_path / "last.pt") == []
