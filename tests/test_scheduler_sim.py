"""A small version of ``benchmarks/scheduler_sim.py`` (issue 15.4): the simulation drives
the pure state machine to the end for each workload, the state's books stay consistent,
and the memory bounds hold. The rates themselves are measured in benchmarks/, never here."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SIM = Path(__file__).resolve().parent.parent / "benchmarks" / "scheduler_sim.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("scheduler_sim", SIM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("bare", [False, True])
@pytest.mark.parametrize("workers", [10, 300])
def test_no_op_tasks_all_run_and_leave_nothing(sim, workers, bare, monkeypatch):
    monkeypatch.setattr(sim.BARE, "on", bare)
    result = sim.run_noop(workers, 3_000)
    assert result["tasks"] == 3_000 and result["rate"] > 0


@pytest.mark.parametrize("workers, blind, bound", [(10, 1.33, 0.5), (200, 1.96, 1.7)])
def test_dag_places_by_locality_and_moves_fewer_inputs(sim, workers, blind, bound):
    """Two 1 MB inputs per task, picked at random among stored ones: placing blindly
    moves ``blind`` of them per task (4 workers a node: 2 x (1 - 1/nodes)); the
    locality rule moves fewer (0.06 at W = 10, 1.39 at W = 200 when written)."""
    result = sim.run_dag(workers, 3_000)
    assert result["tasks"] == 3_000
    assert result["transfers_per_task"] < bound < blind, result


def test_memory_per_queued_task_within_the_issue_bound_and_nothing_left_when_freed(sim):
    result = sim.run_memory(5_000, 2_000)
    assert result["bytes_per_queued"] <= 2048, result
    assert result["bytes_per_freed"] <= 64, result
    assert result["live_tasks"] == 0 and result["live_objects"] == 0, result


def test_the_state_validates_after_a_simulated_run(sim):
    simulation = sim.Simulation(20)
    inputs = [simulation.submit(stored=True) for _ in range(20)]
    simulation.flush()
    for i in range(500):
        simulation.submit(deps=[inputs[i % 20], inputs[(i * 7) % 20]])
    simulation.flush()
    simulation.state.validate_state()
    simulation.run()
    simulation.state.validate_state()
    assert not simulation.state.tasks or all(
        t.state == "done" for t in simulation.state.tasks.values())
