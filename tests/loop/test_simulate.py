import json

import pytest

from activeseg.loop import simulate as sim
from activeseg.core.pool import round_budget
from activeseg.core.labels import LabelState
from activeseg.model.training import planned_steps


def run(cfg, data, out, strategies=("mc_variance",), seeds=(0,), rounds=3):
    return sim.simulate(cfg, data, list(strategies), list(seeds), out, rounds=rounds, progress=False)


def test_end_to_end_simulation_writes_results_and_plot(tiny_cfg, tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    tiny_cfg.train.passes, tiny_cfg.train.max_steps, tiny_cfg.train.patience = 4.0, 40, 0
    results = run(tiny_cfg, tiny_data_dir, out, strategies=("random", "mc_variance", "full"))
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    keys = {"strategy", "seed", "round", "labeled_pixel_fraction", "dice", "voe", "msd", "hd95", "train_steps",
            "stop_epoch", "train_seconds", "round_seconds", "cpu_seconds"}
    assert all(keys <= set(r) for r in saved["runs"])
    pool = 6 * 64 * 64  # 6 training images of 64 x 64
    for r in saved["runs"]:  # no early stopping: the planned steps, in epochs of 4
        assert r["train_steps"] == planned_steps(round(r["labeled_pixel_fraction"] * pool), tiny_cfg.train)
        assert r["stop_epoch"] == (r["train_steps"] - 1) // 4 and r["train_seconds"] > 0
    full = next(r for r in saved["runs"] if r["strategy"] == "full")
    assert full["train_steps"] == 24 > saved["runs"][0]["train_steps"]  # ceil(4 x 24576 / (4 x 32^2))
    assert [r["round"] for r in saved["runs"] if r["strategy"] == "random"] == [0, 1, 2]
    assert [r["labeled_pixel_fraction"] for r in saved["runs"] if r["strategy"] == "full"] == [1.0]
    assert set(saved["summary"]) == {"random", "mc_variance", "full"}
    assert (out / "learning_curves.png").stat().st_size > 10_000
    for r in saved["runs"]:
        assert 0 <= r["dice"] <= 1


def test_queries_spend_the_budget_only_on_the_train_pool(tiny_cfg, tiny_data_dir, tmp_path):
    out = tmp_path / "out"
    run(tiny_cfg, tiny_data_dir, out)
    split = json.loads((out / "split.json").read_text())
    folder = out / "runs" / "mc_variance" / "seed-0"
    previous = None
    for k in range(3):
        state = LabelState.load(folder / f"round-{k:03d}")
        selection = json.loads((folder / f"round-{k:03d}" / "selection.json").read_text())
        assert set(state.shapes) == set(split["train"])
        assert all(s["id"].split("_y")[0] in split["train"] for s in selection)
        spent = sum(s["cost"] for s in selection)
        assert spent <= round_budget(tiny_cfg, state)
        if previous is not None:  # each round's saved labels grow by exactly what its query paid
            assert state.revealed_pixels() - previous == spent
        ids = [s["id"] for s in selection]
        assert len(ids) == len(set(ids))
        assert not set(ids) & {h["region"]["id"] for h in state.history if h["round"] <= k}
        previous = state.revealed_pixels()


def test_deterministic_by_seed(tiny_cfg, tiny_data_dir, tmp_path):
    a = run(tiny_cfg, tiny_data_dir, tmp_path / "a", rounds=2)
    b = run(tiny_cfg, tiny_data_dir, tmp_path / "b", rounds=2)
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("mlflow_run_id", "train_seconds", "round_seconds", "cpu_seconds")} for r in rs]  # noqa: E731
    assert strip(a["runs"]) == strip(b["runs"])
    sel = lambda root: (root / "runs/mc_variance/seed-0/round-000/selection.json").read_text()  # noqa: E731
    assert sel(tmp_path / "a") == sel(tmp_path / "b")


def test_interrupted_simulation_resumes_after_the_last_finished_round(tiny_cfg, tiny_data_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_train = sim.train_model
    calls = []

    def crash_in_round_2(cfg, dataset, state, val, folder, *args, **kwargs):
        calls.append(folder.name)
        if folder.name == "round-002":
            raise KeyboardInterrupt
        return real_train(cfg, dataset, state, val, folder, *args, **kwargs)

    monkeypatch.setattr(sim, "train_model", crash_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg, tiny_data_dir, out)
    first = (out / "runs/mc_variance/seed-0/round-001/done.json").read_text()
    monkeypatch.setattr(sim, "train_model", lambda *a, **k: (calls.append(a[4].name), real_train(*a, **k))[1])
    results = run(tiny_cfg, tiny_data_dir, out)
    assert calls == ["round-000", "round-001", "round-002", "round-002"]
    assert [r["round"] for r in results["runs"]] == [0, 1, 2]
    assert (out / "runs/mc_variance/seed-0/round-001/done.json").read_text() == first


def test_mlflow_logs_every_training_run(tiny_cfg, tiny_data_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    tiny_cfg.tracking.mlflow = True
    out = tmp_path / "out"
    results = run(tiny_cfg, tiny_data_dir, out, rounds=2)
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    for record in results["runs"]:
        mlrun = client.get_run(record["mlflow_run_id"])
        assert mlrun.data.params["strategy"] == "mc_variance" and mlrun.data.params["train.max_steps"] == "8"
        assert mlrun.data.metrics["test_dice"] == pytest.approx(record["dice"])
        history = client.get_metric_history(mlrun.info.run_id, "val_dice")
        assert len(history) == record["stop_epoch"] + 1
        assert mlrun.data.metrics["train_steps"] == record["train_steps"]
        artifacts = [a.path for a in client.list_artifacts(mlrun.info.run_id, "checkpoint")]
        assert artifacts == ["checkpoint/model.pt"]
