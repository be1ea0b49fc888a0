"""Bad GPU input (issue #14), on any machine through monkeypatching: a bf16 request on a GPU without
bf16, and a process-group backend this torch build lacks, are one-line errors naming what to change."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import invoke, put_selection

from salcurate import distributed as ddp
from salcurate.errors import InputError
from salcurate.training import harness

CUDA = torch.device("cuda")  # a description only: nothing here touches a GPU
TINY_ARGS = ["--backbone", "resnet18", "--backbone-weights", "none", "--crop", "24", "--batch-size", "2",
             "--max-iter", "1", "--workers", "0", "--no-tensorboard"]


@pytest.fixture
def no_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU before Ampere: no native bf16."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)


@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables torchrun sets for one process."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(ddp.BACKEND_ENV, raising=False)


# -- bf16 ----------------------------------------------------------------------------------------------
def test_bf16_request_on_a_gpu_without_bf16_is_refused(no_bf16: None) -> None:
    with pytest.raises(InputError, match=r"bf16 autocast \(amp\) was asked for, but this GPU has no bf16 support "
                                         r"\(compute capability 8.0 or newer\); drop amp to compute in float32") as e:
        harness.Precision(CUDA, amp=True)
    assert e.value.params == ("amp",) and "\n" not in str(e.value)


def test_the_default_on_a_gpu_without_bf16_is_float32(no_bf16: None) -> None:
    p = harness.Precision(CUDA)
    assert (p.amp, p.channels_last) == (False, True)
    assert harness.Precision(CUDA, amp=False).amp is False


def test_bf16_where_the_gpu_has_it_and_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert harness.Precision(CUDA).amp and harness.Precision(CUDA, amp=True).amp
    assert harness.Precision(torch.device("cpu"), amp=True).amp  # CPU autocast computes in bf16 everywhere


def test_cli_retrain_amp_on_a_gpu_without_bf16(tiny_store: Path, tmp_path: Path, no_bf16: None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    put_selection(tiny_store, "all", [1] * 6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the device check passes; nothing runs on it
    result = invoke(["retrain", tiny_store, "--selection", "all", "-o", tmp_path / "run", *TINY_ARGS,
                     "--device", "cuda", "--amp"])
    assert result.exit_code == 2
    assert result.stderr == ("error: bf16 autocast (--amp) was asked for, but this GPU has no bf16 support (compute "
                             "capability 8.0 or newer); drop --amp to compute in float32\n")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# -- process-group backends ----------------------------------------------------------------------------
def test_default_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ddp.BACKEND_ENV, raising=False)
    monkeypatch.setattr(dist, "is_nccl_available", lambda: True)
    monkeypatch.setattr(dist, "is_gloo_available", lambda: True)
    assert ddp.backend_for(CUDA) == "nccl" and ddp.backend_for(torch.device("cpu")) == "gloo"
    monkeypatch.setenv(ddp.BACKEND_ENV, " GLOO ")
    assert ddp.backend_for(CUDA) == "gloo"


def test_unavailable_default_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ddp.BACKEND_ENV, raising=False)
    monkeypatch.setattr(dist, "is_nccl_available", lambda: False)
    with pytest.raises(InputError, match=r"^the nccl backend of torch.distributed \(the default on cuda\) is not "
                                         r"available in this torch build; set SALCURATE_DIST_BACKEND=gloo, or run "
                                         r"one process without torchrun$"):
        ddp.backend_for(CUDA)
    monkeypatch.setattr(dist, "is_gloo_available", lambda: False)
    with pytest.raises(InputError, match=r"the gloo backend .*\(the default on cpu\) is not available .*; use nccl on "
                                         r"CUDA"):
        ddp.backend_for(torch.device("cpu"))


def test_unavailable_or_unknown_chosen_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ddp.BACKEND_ENV, "mpi")
    monkeypatch.setattr(dist, "is_mpi_available", lambda: False)
    with pytest.raises(InputError, match=r"the mpi backend of torch.distributed \(SALCURATE_DIST_BACKEND=mpi\) is "
                                         r"not available"):
        ddp.backend_for(torch.device("cpu"))
    monkeypatch.setenv(ddp.BACKEND_ENV, "nccl")
    with pytest.raises(InputError, match=r"the nccl backend \(SALCURATE_DIST_BACKEND=nccl\) needs CUDA, but device "
                                         r"is cpu; use gloo on the CPU") as e:
        ddp.backend_for(torch.device("cpu"))
    assert e.value.params == ("device",)
    monkeypatch.setenv(ddp.BACKEND_ENV, "carrier-pigeon")
    with pytest.raises(InputError, match=r"SALCURATE_DIST_BACKEND must be one of nccl, gloo, mpi, ucc, got "
                                         r"'carrier-pigeon'"):
        ddp.backend_for(torch.device("cpu"))


def test_one_process_without_torchrun_needs_no_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(dist, "is_gloo_available", lambda: False)
    info, device = ddp.setup(torch.device("cpu"))
    assert not info.enabled and not info.launched and device == torch.device("cpu")


def test_one_process_under_torchrun_joins_a_group(torchrun_env: None) -> None:
    with ddp.session(torch.device("cpu")) as (info, device):
        assert info.launched and info.enabled and info.world == 1 and info.main
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        assert ddp.all_reduce_sum(torch.ones(2), info).tolist() == [1.0, 1.0]
    assert not dist.is_initialized()


def test_cli_under_torchrun_with_an_unavailable_backend(tiny_store: Path, tmp_path: Path, torchrun_env: None,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    put_selection(tiny_store, "all", [1] * 6)
    monkeypatch.setattr(dist, "is_gloo_available", lambda: False)
    result = invoke(["retrain", tiny_store, "--selection", "all", "-o", tmp_path / "run", *TINY_ARGS,
                     "--device", "cpu"])
    assert result.exit_code == 2 and not dist.is_initialized()
    assert result.stderr == ("error: the gloo backend of torch.distributed (the default on cpu) is not available in "
                             "this torch build; use nccl on CUDA, or run one process without torchrun\n")
