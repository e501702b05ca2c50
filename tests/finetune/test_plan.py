"""The batch plan: every epoch visits each example once, and a step's draw depends only on
(seed, step, micro-batch), so a resumed run draws what the interrupted one would have."""

from __future__ import annotations

from autolabel.finetune.config import TrainConfig
from autolabel.finetune.data import Dataset, Example
from autolabel.finetune.plan import BatchPlanner, _merge_queries, batch_indices
from autolabel.geometry import Size
from autolabel.importers.dataset import human_labels
from autolabel.ontology import Ontology


def _dataset(n: int = 5) -> Dataset:
    examples = tuple(Example(f"/img/{i}.jpg", Size(100, 80), human_labels([[10, 10, 50, 40]], [i % 2]))
                     for i in range(n))
    return Dataset(examples, Ontology.from_classes(["cat", "dog"]))


def test_each_epoch_is_a_permutation():
    drawn = [i for micro in range(6) for i in batch_indices(micro, 5, 10, seed=3)]  # 3 epochs of 10
    for epoch in range(3):
        assert sorted(drawn[10 * epoch : 10 * (epoch + 1)]) == list(range(10))
    assert drawn[:10] != drawn[10:20]
    assert drawn[:5] != batch_indices(0, 5, 10, seed=4)


def test_draws_are_a_pure_function_of_seed_step_and_micro_batch():
    data = _dataset()
    config = TrainConfig(steps=4, grad_accum=2, batch_size=3, num_negatives=2, seed=7)
    everything = list(BatchPlanner(data, config, ("car", "tree")).remaining(0))
    assert len(everything) == 8
    resumed = list(BatchPlanner(data, config, ("car", "tree")).remaining(2))  # after step 2 of 4
    assert resumed == everything[4:]
    other_seed = list(BatchPlanner(data, TrainConfig(steps=4, grad_accum=2, batch_size=3, seed=8), ()).remaining(0))
    assert other_seed != everything
    for draw in everything[0]:
        present = data.examples[draw.example].labels.class_ids.tolist()
        assert [draw.queries[draw.query_of_class[c]] for c in present] == [data.ontology.names[c] for c in present]
        assert draw.augment is not None and draw.view is None


def test_cheap_mode_draws_cached_views_of_the_drawn_example():
    data = _dataset(3)
    views = {0: [0, 1], 1: [2, 3], 2: [4, 5]}
    planner = BatchPlanner(data, TrainConfig(mode="heads", steps=20, batch_size=3), (), cached_views=views)
    draws = [d for batch in planner.remaining(0) for d in batch]
    assert all(d.view in views[d.example] and d.augment is None for d in draws)
    assert {d.view for d in draws} == set(range(6))


def test_merged_queries_index_one_table():
    planner = BatchPlanner(_dataset(2), TrainConfig(batch_size=2, num_negatives=1), ())
    draws = planner.draw(1, 0)
    texts, index = _merge_queries(draws)
    assert len(texts) == len(set(texts))
    assert [[texts[k] for k in ix] for ix in index] == [d.queries for d in draws]
