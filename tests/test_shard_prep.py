"""Sharded preparation (`--shard I/N` on every data_prep command) and the merge (`data_prep.merge`)."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from videos import make_broken, make_hmdb51, make_ssv2, make_video
from data_prep import folder, hmdb51, merge, ssv2, synthetic
from video_adapt.data.check import check_store
from video_adapt.data.datasets import StoreSource, EvalClips, EvalView, TrainClips, TrainView
from video_adapt.data.merge import merge_parts
from video_adapt.data.prepare import PrepError, parse_shard, shard_plan
from video_adapt.data.store import FrameStore, StoreError
from conftest import ROOT

SMALL = ["--short-side", "24"]


def source_folder(root: Path, per_class: int = 4, broken: bool = True) -> Path:
    for c, name in enumerate(("jump", "run", "sit")):
        for i in range(per_class):
            make_video(root / name / f"{name}{i}.mp4", n=9 + (i % 4), seed=10 * c + i)
    if broken:
        make_broken(root / "run")
    return root


def shard_job(args: list[str], i: int, n: int, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "data_prep.folder", *args, "--shard", f"{i}/{n}", *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def small_files(store: Path) -> dict[str, str]:
    """Everything but the shard files and prep.json: what a reader sees of the store besides the frames."""
    files = (p.relative_to(store) for p in sorted(store.rglob("*")) if p.is_file())
    return {str(p): (store / p).read_text() for p in files
            if p.suffix in (".csv", ".json") and p.name != "prep.json" and not p.parts[0].startswith("part-")}


def assert_same_store(a: Path, b: Path, seed: int = 3) -> None:
    """Same video rows, labels and ids, same decoded frames, and the same training and test clips for one seed."""
    sa, sb = FrameStore(a), FrameStore(b)
    assert sa.meta == sb.meta
    for split in sa.meta.splits:
        ia, ib = sa.split(split), sb.split(split)
        assert ia.video_rows == ib.video_rows and ia.videos == ib.videos and ia.failed == ib.failed
        for name, column in ia.columns.items():
            if name != "video_first":  # where a video starts depends on the shard boundaries, nothing else
                assert np.array_equal(column, ib.columns[name]), name
        for i in range(len(ia)):
            n = ia.stored_frames(i)
            assert np.array_equal(sa.frames(split, i, np.arange(n)), sb.frames(split, i, np.arange(n)))
        train_view = TrainView(num_frames=4, img_size=16, sampling="tsn", crop="rrc", crop_scale=(0.3, 1.0), flip=True)
        test_view = EvalView(num_frames=4, img_size=16, sampling="dense", stride=2, clips=2, crops=3, short_side=16)
        ta, tb = (TrainClips(StoreSource(s, split), train_view, seed=seed) for s in (a, b))
        ea, eb = EvalClips(StoreSource(a, split), test_view), EvalClips(StoreSource(b, split), test_view)
        for epoch in (0, 1):
            ta.set_epoch(epoch), tb.set_epoch(epoch)
            for i in range(len(ta)):
                (ca, la, ba), (cb, lb, bb) = ta[i], tb[i]
                assert torch.equal(ca, cb) and la == lb and torch.equal(ba, bb)
        for i in range(len(ea)):
            (va, la, _), (vb, lb, _) = ea[i], eb[i]
            assert torch.equal(va, vb) and la == lb


def test_shard_plan_partitions_every_split_in_balanced_contiguous_parts():
    for rows in (0, 1, 2, 7, 23, 100):
        for size in (1, 2, 5, 500):
            whole = shard_plan(rows, size)
            # one part is the whole job, cut as before: shard k holds rows [k * size, (k + 1) * size)
            assert whole == [(k // size, range(k, min(k + size, rows))) for k in range(0, max(rows, 1), size)]
            for parts in (1, 2, 3, 8):
                plans = [shard_plan(rows, size, p, parts) for p in range(parts)]
                assert plans == [shard_plan(rows, size, p, parts) for p in range(parts)]  # a pure function
                shares = [[r for _, rs in plan for r in rs] for plan in plans]
                assert [r for share in shares for r in share] == list(range(rows))  # contiguous, exactly once
                assert max(map(len, shares)) - min(map(len, shares)) <= 1
                numbers = [k for plan in plans for k, _ in plan]
                assert numbers == list(range(len(numbers)))  # globally numbered in row order: no name clashes
                assert all(0 < len(rs) <= size for plan in plans for _, rs in plan) or rows == 0


def test_parse_shard_and_the_command_line_option():
    assert parse_shard("0/1") == (0, 1) and parse_shard("7/8") == (7, 8)
    for bad in ("8/8", "-1/8", "3", "a/b", "1/0"):
        with pytest.raises(PrepError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(SystemExit) as exc:
        folder.main(["--videos", "x", "--out", "y", "--shard", "3/3"])
    assert exc.value.code == 2


def test_three_shard_processes_merge_into_the_whole_store(tmp_path):
    """3 separate processes (one with 2 decoding workers) + merge = the whole job's store."""
    videos = source_folder(tmp_path / "videos", per_class=3)
    args = ["--videos", str(videos), "--val-videos", str(videos), *SMALL, "--shard-size", "2"]
    whole = tmp_path / "whole"
    assert folder.main([*args, "--out", str(whole)]) == 0
    out = tmp_path / "sharded"
    jobs = [shard_job([*args, "--out", str(out)], i, 3, *(["--workers", "2"] if i == 1 else [])) for i in range(3)]
    for job in jobs:
        log = job.communicate(timeout=300)[0]
        assert job.returncode == 0, log[-500:]
    for i in range(3):  # failures stay with their part until the merge
        with (out / f"part-{i}-of-3" / "failed.csv").open() as f:
            assert all(r["split"] in ("train", "val") for r in csv.DictReader(f))
    with pytest.raises(StoreError, match="part 0 of 3"):
        FrameStore(out / "part-0-of-3")
    assert merge.main([str(out)]) == 0
    assert small_files(out) == small_files(whole)  # meta.json, failed.csv, videos.csv: byte for byte
    assert FrameStore(out).meta.splits["train"].failed == 4
    assert_same_store(whole, out)
    assert check_store(out, progress=False) == []
    for shard in (out / "train").glob("shard-*"):  # linked, not copied
        owner = [p for p in out.glob("part-*") if (p / "train" / shard.name).exists()]
        assert len(owner) == 1 and os.path.samefile(shard, owner[0] / "train" / shard.name)
    assert not list(out.rglob("*.tmp*"))


def test_killed_shard_job_resumes_and_merges_to_the_whole_store(tmp_path):
    videos = source_folder(tmp_path / "videos", per_class=12, broken=False)
    args = ["--videos", str(videos), *SMALL, "--shard-size", "1"]
    whole = tmp_path / "whole"
    assert folder.main([*args, "--out", str(whole)]) == 0
    out = tmp_path / "sharded"
    part = out / "part-1-of-3" / "train"
    proc = shard_job([*args, "--out", str(out)], 1, 3)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(part.glob("shard-*.npz"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list(part.glob("shard-*.npz")))
    assert 3 <= done_before < 12 and not (out / "part-1-of-3" / "meta.json").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in part.glob("shard-*.npz")}
    assert merge.main([str(out), str(out / "part-1-of-3")]) == 2  # an unfinished part is never merged
    for i in range(3):
        assert folder.main([*args, "--out", str(out), "--shard", f"{i}/3"]) == 0
    for name, stamp in stamps.items():  # finished shards were kept, not redone
        assert (part / name).stat().st_mtime_ns == stamp
    assert merge.main([str(out)]) == 0
    assert_same_store(whole, out)
    assert not list(out.rglob("*.tmp*"))


@pytest.fixture()
def two_parts(tmp_path):
    """Parts 0 and 1 of 2 of one job, and parts that must not be merged with them."""
    videos = source_folder(tmp_path / "videos", per_class=2, broken=False)
    args = ["--videos", str(videos), *SMALL, "--shard-size", "2"]
    parts = tmp_path / "parts"
    for i in range(2):
        assert folder.main([*args, "--out", str(parts), "--shard", f"{i}/2"]) == 0
    other = source_folder(tmp_path / "other_videos", per_class=3, broken=False)
    bad = tmp_path / "bad"
    assert folder.main([*args, "--out", str(bad / "opts"), "--shard", "1/2", "--quality", "80"]) == 0
    assert folder.main(["--videos", str(other), *SMALL, "--shard-size", "2", "--out", str(bad / "list"),
                        "--shard", "1/2"]) == 0
    assert folder.main([*args, "--out", str(bad / "three"), "--shard", "1/3"]) == 0
    assert folder.main([*args, "--out", str(bad / "whole")]) == 0
    return args, parts, bad


def test_a_missing_duplicated_or_mismatched_part_is_refused_with_one_line(two_parts, tmp_path, capsys):
    args, parts, bad = two_parts
    p0, p1 = parts / "part-0-of-2", parts / "part-1-of-2"
    copy = tmp_path / "copy_of_part_1"
    shutil.copytree(p1, copy)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(p1, unfinished)
    (unfinished / "meta.json").unlink()
    lost = tmp_path / "lost_shard"
    shutil.copytree(p1, lost)
    next(lost.glob("train/shard-*.npz")).unlink()
    cases = {
        "part 1 of 2 missing": [p0],
        "part 1 of 2 given twice": [p0, p1, copy],
        "with other options than": [p0, bad / "opts" / "part-1-of-2"],
        "from another source list than": [p0, bad / "list" / "part-1-of-2"],
        "but": [p0, bad / "three" / "part-1-of-3"],
        "not finished (no meta.json); rerun its --shard 1/2 job": [p0, unfinished],
        "prepared without --shard": [p0, bad / "whole"],
        "missing; rerun the part's job": [p0, lost],
        "no such part directory": [p0, tmp_path / "nowhere"],
    }
    out = tmp_path / "merged"
    for message, given in cases.items():
        capsys.readouterr()
        assert merge.main([str(out), *map(str, given)]) == 2, message
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
        named = [str(p) for p in given[1:]]
        assert any(n in err for n in named) or message == "part 1 of 2 missing", err
        assert not out.exists()  # refused before anything was written
    assert merge.main([str(bad / "whole"), str(p0), str(p1)]) == 2  # OUT holds another store
    assert "holds a store prepared with other options" in capsys.readouterr().err
    assert merge.main([str(tmp_path / "empty")]) == 2
    assert merge.main([str(out), str(p1), str(p0)]) == 0  # any order; parts outside OUT
    assert check_store(out, progress=False) == []


def test_a_killed_merge_is_not_a_store_and_a_rerun_finishes_it(two_parts, tmp_path):
    args, parts, bad = two_parts
    assert merge.main([str(parts)]) == 0
    reference = small_files(parts)
    # as if killed half-way: meta.json not yet back, some links missing, a temporary left over
    (parts / "meta.json").unlink()
    (parts / "failed.csv").unlink()
    shards = sorted((parts / "train").glob("shard-*"))
    shards[-1].unlink()
    shards[-2].rename(shards[-2].with_name(shards[-2].name + ".tmp"))
    with pytest.raises(StoreError, match="no meta.json"):
        FrameStore(parts)
    stray = parts / "train" / "shard-00099.npz"
    stray.write_bytes(b"")
    assert merge.main([str(parts)]) == 2  # a shard file that no part owns is never adopted
    stray.unlink()
    assert merge_parts(parts).parts == 2
    assert small_files(parts) == reference and check_store(parts, progress=False) == []
    assert merge_parts(parts, remove_parts=True).videos == 6  # a merged store merges again to itself
    assert not list(parts.glob("part-*")) and check_store(parts, progress=False) == []
    assert folder.main([*args, "--out", str(parts)]) == 2  # a whole job does not mistake it for its own


def test_every_command_takes_shard(tmp_path):
    videos, labels = make_ssv2(tmp_path / "ssv2_src")
    common = ["--videos", str(videos), "--labels", str(labels), "--with-test", *SMALL, "--shard-size", "1"]
    hvideos, hsplits = make_hmdb51(tmp_path / "hmdb_src")
    hcommon = ["--videos", str(hvideos), "--splits", str(hsplits), *SMALL]
    syn = ["--classes", "2", "--videos-per-class", "2", "--val-per-class", "1", "--size", "32", "--frames", "6"]
    for name, main, argv, out in (("ssv2", ssv2.main, common, "--out"), ("hmdb51", hmdb51.main, hcommon, "--out")):
        whole, sharded = tmp_path / f"{name}_whole", tmp_path / f"{name}_sharded"
        assert main([*argv, "--out", str(whole)]) == 0
        for i in range(2):
            assert main([*argv, "--out", str(sharded), "--shard", f"{i}/2"]) == 0
        assert merge.main([str(sharded)]) == 0
        assert small_files(sharded) == small_files(whole)
        assert_same_store(whole, sharded)
    src = tmp_path / "syn"
    assert synthetic.main(["--out", str(src), *syn, "--shard", "0/2"]) == 2  # --shard without --prep
    for i in (1, 0):
        assert synthetic.main(["--out", str(src), *syn, "--prep", "--shard", f"{i}/2"]) == 0
    assert merge.main([str(src / "store")]) == 0
    assert synthetic.main(["--out", str(tmp_path / "syn_whole"), *syn, "--prep"]) == 0
    meta = FrameStore(src / "store").meta
    assert meta.splits == FrameStore(tmp_path / "syn_whole" / "store").meta.splits
    assert meta.splits["train"].videos == 4 and meta.splits["val"].failed == 0
    assert check_store(src / "store", progress=False) == []


def test_val_fraction_holdout_is_seeded_so_shards_agree(tmp_path):
    """`--val-fraction` used an undefined args.seed (AttributeError) before `--seed` existed."""
    videos = source_folder(tmp_path / "videos", per_class=4, broken=False)
    args = ["--videos", str(videos), *SMALL, "--val-fraction", "0.5", "--seed", "1"]
    assert folder.main([*args, "--out", str(tmp_path / "whole")]) == 0
    for i in range(2):
        assert folder.main([*args, "--out", str(tmp_path / "sharded"), "--shard", f"{i}/2"]) == 0
    assert merge.main([str(tmp_path / "sharded")]) == 0
    assert FrameStore(tmp_path / "whole").meta.splits["val"].videos == 6
    assert_same_store(tmp_path / "whole", tmp_path / "sharded")


def test_merge_runs_both_ways(tmp_path):
    out = subprocess.run([sys.executable, "-m", "data_prep.merge", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and "usage" in out.stdout and "part" in out.stdout, out.stderr[-300:]
    out = subprocess.run([sys.executable, "data_prep/merge.py", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 2 and out.stderr.strip().endswith("no part-*-of-* directories; pass the part directories "
                                                               "after OUT"), out.stderr[-300:]


def test_bench_prep_smoke(tmp_path):
    out = subprocess.run([sys.executable, "tools/bench_prep.py", "--smoke", "--json", str(tmp_path / "p.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-800:]
    figures = json.loads((tmp_path / "p.json").read_text())
    assert set(figures) == {"SSv2 jpeg", "HMDB51 jpeg"}
    for name, f in figures.items():
        assert f["videos/s per worker"] > 0 and f["merge ms per shard file"] > 0
        assert f["store KB per video"] > 0 and f["source KB per video"] > 0
        gb = 19.4 if name.startswith("SSv2") else 2.0
        assert f["1 machines store GB"] == pytest.approx(gb * f["store bytes per source byte"])
        assert f["8 machines minutes"] < f["1 machines minutes"]
    assert "| SSv2 (220,847 videos, 19.4 GB) | jpeg |" in out.stdout
