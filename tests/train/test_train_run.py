"""Train then eval end to end on tiny data; resume gives identical weights; DDP keeps ranks identical."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from erudite_edge.cli.app import main
from ranks import free_port, run_ranks
from tiny_data import make_mixture
from train.config import TrainConfig
from train.loop import Trainer

pytestmark = pytest.mark.slow  # training runs end to end (train, eval, resume, DDP ranks)

COMMON = ["--backbone", "tiny", "--no-pretrained", "--batch-per-dataset", "4", "--input-size", "32", "--embed-dim", "16",
          "--workers", "0", "--no-progress", "--lr", "0.05", "--backbone-lr", "0.05"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_mixture(tmp_path_factory.mktemp("mix"))


@pytest.mark.parametrize("variant", ["ours", "single-joint"])  # single (separate runs): test_paper_fidelity
def test_train_then_eval(tmp_path, data, variant):
    run = tmp_path / variant
    args = ["train", "--variant", variant, "--epochs", "3", "--out", str(run)] + COMMON
    for d in data:
        args += ["--data", d]
    assert main(args) == 0
    for f in ("best/model.safetensors", "best/checkpoint.json", "last/model.safetensors", "last/checkpoint.json",
              "last/state.pt", "last/manifest.json", "run.json"):
        assert (run / f).is_file(), f
    meta = json.loads((run / "last/checkpoint.json").read_text())
    assert meta["labels"]["datasets"] == ["a", "b"]
    assert meta["labels"]["classes"][:2] == ["a/class0", "a/class1"]
    assert meta["labels"]["dataset_of_class"] == [0, 0, 0, 1, 1]
    assert meta["epoch"] == 2 and "val_mean_top1" in meta["metrics"]
    # best is chosen on the validation split, never the test set
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    best = json.loads((run / "best/checkpoint.json").read_text())
    assert best["metrics"]["val_mean_top1"] == max(h["val_mean_top1"] for h in hist)

    out = tmp_path / "eval.json"
    args = ["eval", "--checkpoint", str(run), "--workers", "0", "--out", str(out)]
    for d in data:
        args += ["--data", d]
    assert main(args) == 0
    m = json.loads(out.read_text())
    assert set(m["datasets"]) == {"a", "b"}
    accs = [m["datasets"][k]["top1"] for k in ("a", "b")]
    assert m["mean_top1"] == pytest.approx(sum(accs) / 2)
    assert m["datasets"]["a"]["images"] == 12 and m["datasets"]["b"]["images"] == 8
    # the tiny task is learned: on the training rows (the held-out split is 2-4 images a class, too few to test)
    assert hist[-1]["train_top1"] > 0.5  # chance: about 0.2
    assert all(0 <= v <= 1 for v in m["datasets"]["a"]["per_class"].values())


def test_existing_run_needs_resume(tmp_path, data):
    run = tmp_path / "r"
    base = ["train", "--variant", "baseline", "--epochs", "1", "--out", str(run)] + COMMON + sum((["--data", d] for d in data), [])
    assert main(base) == 0
    assert main(base) == 2  # refuses to overwrite a run
    assert main(["train", "--variant", "baseline", "--epochs", "1", "--out", str(tmp_path / "none"), "--resume"] + COMMON
                + sum((["--data", d] for d in data), [])) == 2


def test_bad_data_path_is_one_line(tmp_path, capsys):
    assert main(["train", "--data", f"x={tmp_path / 'nothing'}", "--out", str(tmp_path / "r")] + COMMON) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing" in err[0]


def _cfg(data, out, epochs=2):
    # 3 steps an epoch: resume is at an epoch boundary, so a short epoch tests it as well as a full one
    return TrainConfig(data=data, out=str(out), variant="ours", backbone="tiny", pretrained=False, epochs=epochs,
                       batch_per_dataset=4, input_size=32, embed_dim=16, hidden=16, workers=0, lr=0.05, backbone_lr=0.05,
                       steps_per_epoch=3)


def test_resume_gives_identical_weights(tmp_path, data):
    straight = Trainer(_cfg(data, tmp_path / "straight"), progress=False)
    straight.run()
    interrupted = Trainer(_cfg(data, tmp_path / "split"), progress=False)
    interrupted.run(until_epoch=1)
    del interrupted
    resumed = Trainer(_cfg(data, tmp_path / "split"), resume=True, progress=False)
    assert resumed.start_epoch == 1
    resumed.run()
    a = load_file(str(tmp_path / "straight" / "last/model.safetensors"))
    b = load_file(str(tmp_path / "split" / "last/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_with_two_dataloader_workers_restores_rng_and_weights(tmp_path, data):
    """Workers take their seeds from a per-(seed, rank, epoch) generator, and the process RNG state is
    restored on resume: a run interrupted after epoch 1 and resumed ends bit-identical to a straight one."""
    def cfg(out):
        c = _cfg(data, out)
        c.workers = 2
        return c

    straight = Trainer(cfg(tmp_path / "straight"), progress=False)
    straight.run()
    interrupted = Trainer(cfg(tmp_path / "split"), progress=False)
    interrupted.run(until_epoch=1)
    rng_at_stop = torch.get_rng_state()
    del interrupted
    torch.manual_seed(1234)  # a resumed process starts with another RNG state
    resumed = Trainer(cfg(tmp_path / "split"), resume=True, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_at_stop)  # the process RNG continues where it stopped
    resumed.run()
    a = load_file(str(tmp_path / "straight" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "last" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


def _mostly_unreadable_mixture(root) -> list[str]:  # noqa: ANN001
    """The tiny mixture with 12 training images per class, 3 of 4 of them unreadable (75 %)."""
    data = make_mixture(root, per_class=(12, 4))
    for d in data:
        for f in sorted((Path(d.split("=", 1)[1]) / "train").glob("*/*.png")):
            if int(f.stem) % 4:
                f.write_bytes(b"not an image")
    return data


def _ddp_worker(rank: int, world: int, port: int, data: list[str], out: str, q) -> None:  # noqa: ANN001
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = TrainConfig(data=data, out=out, variant="ours", backbone="tiny", pretrained=False, epochs=1, batch_per_dataset=4,
                      input_size=32, embed_dim=16, hidden=16, workers=0, lr=0.05, backbone_lr=0.05, device="cpu",
                      steps_per_epoch=6)
    trainer = Trainer(cfg, progress=False)
    digests, skipped = [], 0
    step = trainer.step
    for i, batch in enumerate(trainer.loader):
        if i == 6:
            break
        ids, joint, local = batch["dataset"], batch["joint"], batch["local"]
        assert ids.tolist() == [0, 0, 1, 1]  # every rank keeps every data set's rows, unreadable images or not
        skipped += int(batch["skipped"])
        step(batch["image"], ids, joint, local)
        flat = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        digests.append(all(torch.equal(gathered[0], g) for g in gathered))
        theta = torch.cat([p.detach().reshape(-1) for p in trainer.model.attention_parameters()])
        thetas = [torch.zeros_like(theta) for _ in range(world)]
        dist.all_gather(thetas, theta)
        digests.append(all(torch.equal(thetas[0], t) for t in thetas))
        digests.append(float(theta.abs().sum()))
    q.put((rank, (digests, skipped)))
    dist.destroy_process_group()


def test_ddp_two_processes_keep_identical_weights_with_unreadable_images(tmp_path):
    """75 % of the training images unreadable: some rank's share of a data set is all unreadable in most
    batches; stand-ins of the same data set keep the ranks in step (before: gloo's "Expected to have
    finished reduction in the prior iteration")."""
    data = _mostly_unreadable_mixture(tmp_path / "mix")
    results = run_ranks(_ddp_worker, data, str(tmp_path / "ddp"))
    for r in (0, 1):
        digests, skipped = results[r]
        assert digests[0::3] == [True] * 6  # all weights identical across ranks after every step
        assert digests[1::3] == [True] * 6  # theta identical
        assert skipped > 0
    # theta actually moved (the meta step ran under DDP)
    assert results[0][0][2] != results[0][0][-1]


def test_torchrun_two_processes_with_75_percent_unreadable_images(tmp_path):
    """The README's multi-GPU command, on gloo: completes, and the trainer's per-epoch check that every rank
    holds the same weights passes (it stops the run otherwise)."""
    data = _mostly_unreadable_mixture(tmp_path / "mix")
    run = tmp_path / "run"
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
            "-m", "erudite_edge", "train", "--variant", "ours", "--epochs", "2", "--steps-per-epoch", "4",
            "--device", "cpu", "--out", str(run)] + COMMON + sum((["--data", d] for d in data), [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hist = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 2 and all(h["skipped_images"] > 0 for h in hist)
    assert json.loads((run / "run.json").read_text())["world_size"] == 2


def test_config_file_holds_the_same_options(tmp_path, data):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "data:\n" + "".join(f"  - {d}\n" for d in data)
        + "variant: baseline+\nbackbone: tiny\npretrained: false\nepochs: 1\nbatch-per-dataset: 4\ninput_size: 32\n"
        "embed_dim: 16\nworkers: 0\n"
    )
    run = tmp_path / "r"
    # the command line wins over the file
    assert main(["train", "--config", str(cfg), "--out", str(run), "--embed-dim", "8", "--no-progress"]) == 0
    meta = json.loads((run / "last/checkpoint.json").read_text())
    assert meta["model"]["variant"] == "baseline+" and meta["model"]["embed_dim"] == 8
    assert meta["train_config"]["batch_per_dataset"] == 4
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "b")]) == 2


def test_unreadable_training_images_are_skipped_and_counted(tmp_path, capsys):
    data = make_mixture(tmp_path / "mix")
    for f in (tmp_path / "mix" / "a" / "train" / "class0").iterdir():
        f.write_bytes(b"not an image")
    run = tmp_path / "r"
    assert main(["train", "--variant", "ours", "--epochs", "1", "--out", str(run)] + COMMON
                + sum((["--data", d] for d in data), [])) == 0
    hist = json.loads((run / "history.jsonl").read_text().splitlines()[0])
    assert hist["skipped_images"] >= 1
    assert f"{hist['skipped_images']} unreadable images skipped" in capsys.readouterr().err


def test_resume_takes_the_runs_own_options(tmp_path, data):
    run = tmp_path / "r"
    base = ["train", "--variant", "baseline", "--epochs", "1", "--out", str(run)] + COMMON + sum((["--data", d] for d in data), [])
    assert main(base) == 0
    # only --out, --resume and a longer schedule: data, variant, sizes come from run.json
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--workers", "0", "--no-progress"]) == 0
    assert json.loads((run / "last/checkpoint.json").read_text())["epoch"] == 1
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3", "--variant", "ours"]) == 2  # shape differs


def test_batch_per_dataset_below_two_is_refused(tmp_path, data, capsys):
    args = ["train", "--out", str(tmp_path / "r")] + COMMON + sum((["--data", d] for d in data), [])
    args[args.index("--batch-per-dataset") + 1] = "1"
    assert main(args) == 2
    assert "BatchNorm needs 2" in capsys.readouterr().err


def test_eval_refuses_a_data_set_whose_classes_differ(tmp_path, data, capsys):
    run = tmp_path / "r"
    assert main(["train", "--variant", "baseline", "--epochs", "1", "--out", str(run)] + COMMON
                + sum((["--data", d] for d in data), [])) == 0
    import shutil
    from pathlib import Path

    renamed = tmp_path / "b2"
    shutil.copytree(Path(data[1].split("=", 1)[1]), renamed)
    for split in ("train", "test"):
        (renamed / split / "class0").rename(renamed / split / "zz_class0")  # same images, other class order
    assert main(["eval", "--checkpoint", str(run), "--data", data[0], "--data", f"b={renamed}", "--workers", "0"]) == 2
    assert "has class" in capsys.readouterr().err
