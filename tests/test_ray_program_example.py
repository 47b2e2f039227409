"""examples/ray_program.py: an ordinary Ray program, run with one changed import line."""
from helpers import run_example


def test_the_ray_program_example_runs_unchanged(run_driver):
    run = run_example(run_driver, "ray_program.py", timeout=180)
    out = run.stdout
    for line in ("squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
                 "TypeError at the call: square(x)",
                 "wait([]): ([], [])",
                 "ZeroDivisionError caught two tasks up",
                 "refs from a method: [0, 1, 2]",
                 "classmethod as an actor method: Counter steps by 1",
                 "streamed: [5, 4, 3, 2, 1]",
                 "cancelled",
                 "ran on the chosen node: True",
                 "done"):
        assert line in out, f"{line!r} missing from:\n{out}"
