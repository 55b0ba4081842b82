"""Pack everything the device run lacks into one git-ignored folder (``.device_bundle/``), and size it.

    python scripts/device/build_bundle.py                      # COVID-BLUES store + POCUS/BUSI tasks at 64², wheels
    python scripts/device/build_bundle.py --resume-from DIR    # then: what a cut lease handed back, for the next one

The device image has torch, torchvision, timm, huggingface-hub, safetensors, pyarrow, pandas, scikit-learn and
matplotlib, but no video decoder (no torchcodec, FFmpeg or PyAV), no ``datasets`` and no segmentation-models-pytorch,
and one call carries at most 64 MiB (this repository's files included). So the bundle holds:

* ``<name>_<size>.frames``: the pretraining videos (COVID-BLUES) decoded once at ``--size``, grey, as a frame store
  file (:mod:`timm_uscl.training.data.store`, xz after a per-clip temporal delta: about 33 MiB at 64²);
* ``tasks.tar.xz``: the evaluation tasks decoded by the evaluation's own ``--task-cache`` (POCUS ``--frames``
  frames per video, BUSI images and masks) and ``data/<task>/metadata.csv`` (the cache is keyed by it);
* ``wheels/``: segmentation-models-pytorch (pure Python; its dependencies are all on the device), fetched with
  ``pip download --no-deps`` for the device's Python 3.12;
* ``manifest.json``: settings, sizes, sha256, the commit; ``resume/``: files a previous lease handed back.

Licence: COVID-BLUES is CC BY-NC-ND 4.0. Decoded frames are a derivative: for our own non-commercial use only,
kept on this machine and the lent device, never shared, never committed (``.device_bundle/`` is git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LIMIT = 64 << 20  # what one device call carries, the repository's files included
SMP = "segmentation-models-pytorch"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_store_file(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The pretraining videos as one compressed frame store file (decoded here, once)."""
    from timm_uscl.training.data import DataConfig
    from timm_uscl.training.data.store import build_store, save_store

    src = Path(args.pretrain_data)
    path = out / f"{src.resolve().name}_{args.size}.frames"
    if not path.exists():
        t0 = time.time()
        cfg = DataConfig(source=str(src), image_size=args.size, num_workers=args.workers, cache_dir=None)
        store = build_store(cfg)
        save_store(store, path, codec=args.codec, workers=args.workers)
        print(
            f"store: {store.num_videos} clips, {store.frames.shape[0]} frames, {len(store.skipped)} skipped, "
            f"{store.nbytes / 2**20:.1f} MiB -> {path.stat().st_size / 2**20:.1f} MiB ({time.time() - t0:.0f} s)"
        )
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path), "source": src.resolve().name}


def build_tasks(args: argparse.Namespace, out: Path) -> str:
    """The evaluation's decoded tasks (its own task cache, keyed by metadata) as one xz tar, and the metadata."""
    from timm_uscl.training.evaluation.config import EvalConfig
    from timm_uscl.training.evaluation.task_cache import load_task_cached
    from timm_uscl.training.evaluation.tasks import TASKS, load_items, subsample

    tar_path = out / "tasks.tar.xz"
    root = Path(args.data)
    cfg_args = dict(image_size=args.size, frames_per_video=args.frames, max_items=args.max_items, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = EvalConfig(**cfg_args, task_cache=tmp, progress=False)
        for name in args.tasks:
            spec = TASKS[name]
            items = subsample(load_items(spec, root), args.max_items, 0)
            load_task_cached(spec, root / spec.folder, items, cfg)
            meta = out / "data" / spec.folder / "metadata.csv"
            meta.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / spec.folder / "metadata.csv", meta)
        partial = out / ".tasks.tar.xz.tmp"
        with tarfile.open(partial, "w:xz", preset=9) as tar:  # preset 9: BUSI's images are in two task files
            for f in sorted(Path(tmp).iterdir()):
                tar.add(f, arcname=f.name)
        partial.replace(tar_path)
    return tar_path.name


def get_wheels(args: argparse.Namespace, out: Path) -> list[str]:
    """segmentation-models-pytorch's wheel (the version installed here) for the device's Python 3.12."""
    folder = out / "wheels"
    folder.mkdir(exist_ok=True)
    if args.wheels:
        for whl in Path(args.wheels).glob("*.whl"):
            shutil.copy(whl, folder / whl.name)
    elif not args.no_wheels and not list(folder.glob("*.whl")):
        from importlib.metadata import version

        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", "--platform", "manylinux2014_x86_64", "--platform", "any",
               "-d", str(folder), f"{SMP}=={version(SMP)}"]  # fmt: skip
        subprocess.run(cmd, check=True)
    return sorted(p.name for p in folder.glob("*.whl"))


def take_resume(args: argparse.Namespace, out: Path) -> list[str]:
    """What a lease handed back (results.json, resume parts) into ``resume/``, replacing an older copy only on ask."""
    folder = out / "resume"
    if folder.exists() and any(folder.iterdir()):
        if not args.replace_resume:
            raise SystemExit(f"{folder} already holds an earlier lease's files; add --replace-resume to replace them")
        shutil.rmtree(folder)
    folder.mkdir(exist_ok=True)
    given = Path(args.resume_from)
    names = [p.name for p in given.iterdir() if p.name == "results.json" or p.name.startswith("resume_")]
    for name in names:
        shutil.copyfile(given / name, folder / name)
    return sorted(names)


def carried_bytes(bundle: Path) -> tuple[int, int]:
    """(bytes of this repository's files that travel: tracked and untracked-not-ignored, bytes of the bundle)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    repo = sum((REPO / p.decode()).stat().st_size for p in listed if p and (REPO / p.decode()).is_file())
    return repo, sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="holds pocus/, busi/, covid_blues/")
    ap.add_argument("--pretrain-data", help="folder of pretraining videos (default: DATA/covid_blues)")
    ap.add_argument("--out", default=str(REPO / ".device_bundle"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=16, help="evaluation frames per video")
    ap.add_argument("--tasks", nargs="+", default=["pocus", "busi", "busi_seg"])
    ap.add_argument("--max-items", type=int, help="items per fold (smoke bundles only)")
    ap.add_argument("--codec", choices=("xz", "raw"), default="xz")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--wheels", help="take the wheels from this folder instead of downloading them")
    ap.add_argument("--no-wheels", action="store_true", help="no wheels (a CPU dry run: smp is installed here)")
    ap.add_argument("--resume-from", help="a lease's returned files: results.json and resume_* parts")
    ap.add_argument("--replace-resume", action="store_true")
    args = ap.parse_args(argv)
    args.pretrain_data = args.pretrain_data or str(Path(args.data) / "covid_blues")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    wanted = {"size": args.size, "frames": args.frames, "max_items": args.max_items, "tasks": args.tasks}
    if manifest and any(manifest.get(k) != v for k, v in wanted.items()):
        raise SystemExit(f"{out} was built with other settings ({manifest_path}); use another --out or delete it")
    manifest.update(wanted, built=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), commit=_commit())
    manifest["store"] = build_store_file(args, out)
    manifest["tasks_file"] = build_tasks(args, out) if not (out / "tasks.tar.xz").exists() else "tasks.tar.xz"
    manifest["wheels"] = get_wheels(args, out)
    if args.resume_from:
        manifest["resume"] = take_resume(args, out)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return report(out)


def _commit() -> str | None:
    got = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    return got.stdout.strip() or None


def report(out: Path) -> int:
    """Every file of the bundle, and the whole call against the 64 MiB a device call carries."""
    for p in sorted(q for q in out.rglob("*") if q.is_file()):
        print(f"{p.stat().st_size / 2**20:8.2f} MiB  {p.relative_to(out)}")
    repo, bundle = carried_bytes(out)
    total = repo + bundle
    print(
        f"bundle {bundle / 2**20:.1f} MiB + repository files {repo / 2**20:.1f} MiB = {total / 2**20:.1f} MiB "
        f"of the {LIMIT >> 20} MiB one device call carries ({'fits' if total <= LIMIT else 'DOES NOT FIT'})"
    )
    return 0 if total <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
