"""Task output on real clusters: tqdm bars and partial lines reach a driver in a process
of its own, whose output is a pipe, a file or a pseudo-terminal.

Tasks that must be seen half-way wait for a gate file the test creates once it saw what
it waits for; nothing here depends on how long anything takes.
"""
from __future__ import annotations

import re

from helpers import Terminal, run_example, wait_for

BARS_DRIVER = """
import os, sys, time, graphstore
graphstore.init(num_cpus=2)

@graphstore.remote
def count(name, n, gate=None):
    import os, time
    from tqdm import tqdm
    bar = tqdm(total=n, desc=name, mininterval=0, bar_format="{{desc}}: {{n}}/{{total}}")
    for i in range(n):
        if gate is not None and i == n // 2:
            {before_gate}
            while not os.path.exists(gate):
                time.sleep(0.01)
            {after_gate}
        bar.update(1)
    bar.close()
    return os.getpid()

{main}
graphstore.shutdown()
print("DRIVER_DONE", flush=True)
"""


def bars_driver(main: str, before_gate: str = "pass", after_gate: str = "pass") -> str:
    return BARS_DRIVER.format(main=main, before_gate=before_gate, after_gate=after_gate)


def test_a_bar_in_a_task_is_one_final_line_when_stderr_is_a_pipe(run_driver):
    run = run_driver(bars_driver("""
pids = graphstore.get([count.remote("first", 20), count.remote("second", 30)])
print("PIDS=%d,%d" % tuple(pids), flush=True)
pid = graphstore.get(count.remote("third", 5))
print("PID3=%d" % pid, flush=True)
time.sleep(0.3)
"""), pipes=True)
    assert run.returncode == 0, run.stderr
    first, second = run.value("PIDS").split(",")
    third = run.value("PID3")
    lines = run.stderr.splitlines()
    bars = [line for line in lines if re.search(r"(first|second|third): ", line)]
    assert sorted(bars) == sorted([f"(count pid={first}) first: 20/20",
                                   f"(count pid={second}) second: 30/30",
                                   f"(count pid={third}) third: 5/5"])
    assert "\r" not in run.stderr and "\x1b" not in run.stderr
    assert "DRIVER_DONE" in run.stdout


def test_a_flushed_partial_line_arrives_before_the_task_ends(run_driver, tmp_path):
    gate = tmp_path / "gate"
    driver = run_driver.start(f"""
import os, time, graphstore
graphstore.init(num_cpus=1)

@graphstore.remote
def slow(gate):
    import os, time
    print("working", end="", flush=True)
    while not os.path.exists(gate):
        time.sleep(0.01)
    print("... done")
    return os.getpid()

print("PID=%d" % graphstore.get(slow.remote({str(gate)!r})), flush=True)
time.sleep(0.3)
graphstore.shutdown()
""")
    # The task is still waiting: only its flush() can have sent this.
    assert wait_for(lambda: "working" in driver.stdout(), timeout=30), driver.stderr()
    assert re.search(r"^\(slow pid=\d+\) working$", driver.stdout(), re.M)
    gate.touch()
    assert driver.popen.wait(60) == 0, driver.stderr()
    pid = re.search(r"PID=(\d+)", driver.stdout()).group(1)
    # The rest of the line continues it: the prefix is not printed again mid-line.
    assert f"(slow pid={pid}) working... done\n" in driver.stdout()


def test_live_bars_on_a_terminal(run_driver, tmp_path):
    """Under a pseudo-terminal: two tasks' bars are redrawn in place on rows of their
    own while the tasks run, a flushed partial line shows at once, and what stays on
    the screen is one final line per bar and the completed line."""
    gate = tmp_path / "gate"
    driver = run_driver.start(bars_driver(
        f"""
refs = [count.remote("alpha", 10, {str(gate)!r}), count.remote("beta", 10, {str(gate)!r})]
pids = graphstore.get(refs)
print("PIDS=%d,%d" % tuple(pids), flush=True)
""",
        before_gate='print("waiting for the gate", end="", flush=True)',
        after_gate='print(" - open")'), terminal=True)

    def screen() -> list[str]:
        return Terminal.shows(driver.raw_stdout())

    def halfway():
        rows = screen()
        alpha = [r for r in rows if r.endswith(" alpha: 5/10")]
        beta = [r for r in rows if r.endswith(" beta: 5/10")]
        waiting = [r for r in rows if r.endswith(" waiting for the gate")]
        return rows if len(alpha) == 1 and len(beta) == 1 and len(waiting) == 2 else None

    rows = wait_for(halfway, timeout=30)
    assert rows, f"screen:\n{screen()}\nraw:\n{driver.raw_stdout()!r}"
    # Redrawn in place: every earlier state of the bars is gone from the screen.
    assert not [r for r in rows if re.search(r"(alpha|beta): [0-4]/10", r)]
    # The updates came as carriage returns and cursor moves, not as new lines.
    assert "\x1b[" in driver.raw_stdout() and "\r" in driver.raw_stdout()
    gate.touch()
    assert driver.popen.wait(60) == 0, driver.stdout()
    driver.reader.join(10)
    rows = screen()
    alpha, beta = map(int, re.search(r"PIDS=(\d+),(\d+)", driver.stdout()).groups())
    assert alpha != beta
    for pid, name in ((alpha, "alpha"), (beta, "beta")):
        mine = [r for r in rows if r.startswith(f"(count pid={pid}) ")]
        assert mine == [f"(count pid={pid}) waiting for the gate - open",
                        f"(count pid={pid}) {name}: 10/10"] or \
            sorted(mine) == sorted([f"(count pid={pid}) waiting for the gate - open",
                                    f"(count pid={pid}) {name}: 10/10"]), rows
    assert "DRIVER_DONE" in rows


def test_progress_in_a_terminal_draws_below_the_tasks_bars(run_driver, tmp_path):
    gate = tmp_path / "gate"
    driver = run_driver.start(bars_driver(f"""
refs = [count.remote("task", 4, {str(gate)!r}), graphstore.put(1)]
graphstore.progress(refs, desc="refs", bar_format="{{desc}}: {{n}}/{{total}}")
print("PROGRESS_DONE", flush=True)
"""), terminal=True)

    def screen() -> list[str]:
        return Terminal.shows(driver.raw_stdout())

    def both_live():
        rows = screen()
        return rows if rows[-2:-1] and rows[-2].endswith(" task: 2/4") and \
            rows[-1] == "refs: 1/2" else None

    assert wait_for(both_live, timeout=30), f"screen:\n{screen()}"
    gate.touch()
    assert driver.popen.wait(60) == 0, driver.stdout()
    driver.reader.join(10)
    rows = screen()
    assert len([r for r in rows if r.endswith(" task: 4/4")]) == 1
    assert rows.count("refs: 2/2") == 1
    assert not [r for r in rows if r.endswith(("task: 2/4", "refs: 1/2"))]
    assert rows.index("refs: 2/2") < rows.index("PROGRESS_DONE")


def test_the_progress_example_runs(run_driver):
    run = run_example(run_driver, "progress.py")
    assert "means: [" in run.stdout and "squares: [0, 1, 4, 9" in run.stdout
    assert re.search(r"^\(Trainer\.fit pid=\d+\) loading data\.\.\. done$", run.stdout, re.M)
    for seed in range(4):
        assert len(re.findall(rf"\) simulate {seed}: 100%", run.stderr)) == 1
