"""TorchServe is started from its workdir, so the harness hands it absolute paths whatever the caller passed."""

from __future__ import annotations

from pathlib import Path

from harness.torchserve import TorchServe


def test_relative_workdir_and_model_store_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = TorchServe(workdir=Path("run/torchserve"), model_store=Path("run/model_store"))
    assert server.workdir == tmp_path / "run" / "torchserve" and server.workdir.is_dir()
    assert server.model_store == tmp_path / "run" / "model_store"
    assert TorchServe(workdir=Path("other")).model_store is None
