"""Job matrix: sizes, order, and ids that depend only on what defines a job."""

from __future__ import annotations

from melt.config.loader import validate
from melt.config.specs import ExperimentSpec
from melt.runner.matrix import expand, param_grid


def experiment(**over):
    data = dict(
        name="x",
        devices=["local", "other"],
        models=[dict(name="t", tiny_seed=0)],
        workloads=[dict(kind="bench", name="b", n_prompt=[16, 32], threads=[1, 2]),
                   dict(kind="generate", name="g", prompt=["a", "b"])],
        repetitions=3,
    )
    data.update(over)
    return validate(ExperimentSpec, data, "x")


def test_matrix_size_is_the_product():
    jobs = expand(experiment(), {"t": "abc"})
    # 2 devices x (bench 2x2 + generate 2) params x 3 repetitions
    assert len(jobs) == 2 * (4 + 2) * 3


def test_ids_are_stable_and_distinct():
    a = expand(experiment(), {"t": "abc"})
    b = expand(experiment(), {"t": "abc"})
    assert [j.job_id for j in a] == [j.job_id for j in b]
    assert len({j.job_id for j in a}) == len(a)


def test_repetitions_share_a_cell():
    jobs = expand(experiment(), {"t": "abc"})
    cells = {}
    for j in jobs:
        cells.setdefault(j.cell_id, set()).add(j.repetition)
    assert len(cells) == 2 * (4 + 2)
    assert all(reps == {0, 1, 2} for reps in cells.values())


def test_model_hash_changes_ids():
    a = expand(experiment(), {"t": "abc"})
    b = expand(experiment(), {"t": "abd"})
    assert not {j.job_id for j in a} & {j.job_id for j in b}


def test_param_grid_sweeps_lists_only():
    wl = experiment().workloads[0]
    grid = param_grid(wl)
    assert len(grid) == 4
    assert all(isinstance(v, int) for g in grid for v in g.values())
    assert {(g["n_prompt"], g["threads"]) for g in grid} == {(16, 1), (16, 2), (32, 1), (32, 2)}
