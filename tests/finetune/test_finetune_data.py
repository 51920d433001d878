"""fmprobe/finetune/data.py: batches that depend only on (seed, epoch) and shard over ranks exactly."""

from __future__ import annotations

from fmprobe.finetune.data import eval_plan, train_plan


def test_ddp_shards_make_the_one_process_batches() -> None:
    one, sizes = train_plan(50, 16, seed=3, epoch=2)
    shards = [train_plan(50, 16, seed=3, epoch=2, rank=r, world=2) for r in range(2)]
    assert sizes == [16, 16, 16, 2] and all(s[1] == sizes for s in shards)  # global batch sizes as with one process
    assert train_plan(50, 16, 3, 2, rank=0, world=3)[1] == [16, 16, 16]  # a last batch smaller than world is dropped
    for b, batch in enumerate(one):
        assert sorted(sum((s[0][b] for s in shards), [])) == sorted(batch)  # same samples, same augmentation seeds
    assert train_plan(50, 16, 3, 2)[0] == one and train_plan(50, 16, 3, 3)[0] != one  # order depends on (seed, epoch)
    rows = sorted(r for rank in range(3) for batch in eval_plan(1, 10, 4, rank, 3) for _, r, _ in batch)
    assert rows == list(range(10))
