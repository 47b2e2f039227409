"""The targets set in the issues' "Figures", checked against a run's medians.

``TARGETS`` (issues 3 and 14, objects suite), ``ACTOR_TARGETS`` (issue 4, actors
suite) and ``SPILL_TARGETS`` (issue 5, spill suite), keyed by suite in
``SUITE_TARGETS``; ``render_targets`` makes the pass/FAIL table the report
puts under the suite's table.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends import BACKEND_LABELS
from runner import BackendResult


@dataclass(frozen=True)
class Target:
    """One target of an issue: ``num ÷ den >= need`` (medians), each side a
    (backend, metric key).  For times the sides are swapped (den ÷ num is a
    speed ratio) by listing the other backend first."""
    label: str
    num: tuple[str, str]
    den: tuple[str, str]
    need: float
    how: str = ""
    # A metric holding per-run ratios (paired runs): its median is used
    # instead of num's median ÷ den's median.
    ratio: tuple[str, str] | None = None


TARGETS: list[Target] = [
    Target("put ≥ 3× Ray's, steady state (store memory reused)",
           ("graphstore", "put_gbps"), ("ray", "put_gbps"), 3),
    Target("put ≥ 3× Ray's, first put of a fresh process (fresh pages; the regime of "
           "the issue's \"Ray 2.7 GB/s\")",
           ("graphstore", "put_first_gbps"), ("ray", "put_first_gbps"), 3),
    Target("put ≥ 0.5× warm memcpy, steady state",
           ("graphstore", "put_gbps"), ("graphstore", "memcpy_gbps"), 0.5),
    Target("put ≥ 0.5× warm memcpy, first put of a fresh process",
           ("graphstore", "put_first_gbps"), ("graphstore", "memcpy_gbps"), 0.5),
    Target("issue 14: five back-to-back 200 MB puts, all kept (fresh memory each), "
           "median put ≥ 3× Ray's",
           ("graphstore", "fresh_put_gbps"), ("ray", "fresh_put_gbps"), 3),
    Target("issue 14: the same, median put ≥ 0.5× warm memcpy",
           ("graphstore", "fresh_put_gbps"), ("graphstore", "memcpy_gbps"), 0.5),
    Target("get ≥ 1× Ray's (a time: lower is better, so Ray's ms ÷ graphstore's ms)",
           ("ray", "get_ms"), ("graphstore", "get_ms"), 1, how="speed ratio"),
    Target("task with the 200 MB argument ≥ 1× Ray's",
           ("graphstore", "task_arg_gbps"), ("ray", "task_arg_gbps"), 1),
    Target("cross-host ≥ 0.6× raw loopback TCP (same run)",
           ("graphstore", "cross_host_gbps"), ("graphstore", "raw_tcp_gbps"), 0.6,
           how="median of the per-run ratios of paired runs",
           ratio=("graphstore", "cross_host_vs_tcp")),
]

# The targets of issue 5 ("Figures"): spilling 2 GiB through a 512 MiB store.
SPILL_TARGETS: list[Target] = [
    Target("disk spill ≥ 0.5× plain sequential write of the same bytes (same disk, "
           "same run)",
           ("graphstore", "spill_gbps"), ("graphstore", "plain_write_gbps"), 0.5,
           how="median of the per-run ratios of paired runs",
           ratio=("graphstore", "spill_vs_write")),
    Target("disk restore ≥ 0.5× plain sequential read of the same bytes (same disk, "
           "same run)",
           ("graphstore", "restore_gbps"), ("graphstore", "plain_read_gbps"), 0.5,
           how="median of the per-run ratios of paired runs",
           ratio=("graphstore", "restore_vs_read")),
    Target("spill ≥ 1× Ray's (same workload, Ray filesystem spilling, same run)",
           ("graphstore", "spill_gbps"), ("ray", "spill_gbps"), 1),
    Target("restore ≥ 1× Ray's (same workload, same run)",
           ("graphstore", "restore_gbps"), ("ray", "restore_gbps"), 1),
]
# The targets of issue 4 ("Figures"): actor calls.
ACTOR_TARGETS: list[Target] = [
    Target("5,000 actor calls ≥ 1.5× Ray's (same run)",
           ("graphstore", "actor_calls_per_s"), ("ray", "actor_calls_per_s"), 1.5),
    Target("300 actor round trips ≥ 2× Ray's (same run)",
           ("graphstore", "actor_round_trips_per_s"), ("ray", "actor_round_trips_per_s"), 2),
]
SUITE_TARGETS = {"actors": ("issue 4", ACTOR_TARGETS),
                 "objects": ("issues 3 and 14", TARGETS),
                 "spill": ("issue 5", SPILL_TARGETS)}

_SHORT = {"actor_calls_per_s": "calls", "actor_round_trips_per_s": "round trips",
          "put_gbps": "put", "put_first_gbps": "first put",
          "fresh_put_gbps": "fresh puts", "memcpy_gbps": "memcpy",
          "get_ms": "get", "task_arg_gbps": "task", "cross_host_gbps": "cross-host",
          "raw_tcp_gbps": "raw TCP", "spill_gbps": "spill", "restore_gbps": "restore",
          "plain_write_gbps": "plain write", "plain_read_gbps": "plain read"}
# Measured in graphstore's process but not of graphstore: named without it.
_REFERENCES = ("memcpy_gbps", "raw_tcp_gbps", "plain_write_gbps", "plain_read_gbps")


def render_targets(results: dict[str, BackendResult],
                   targets: list[Target] = TARGETS) -> list[str]:
    """The targets of an issue's "Figures", checked against this run's medians."""
    def med(side: tuple[str, str]) -> float | None:
        r = results.get(side[0])
        return r.median(side[1]) if r is not None else None

    def name(side: tuple[str, str]) -> str:
        unit = ("ms" if side[1].endswith("_ms") else "/s" if side[1].endswith("_per_s")
                else "GB/s")
        value = med(side)
        shown = "—" if value is None else f"{value:.3g} {unit}"
        who = "" if side[1] in _REFERENCES else BACKEND_LABELS[side[0]] + " "
        return f"{who}{_SHORT.get(side[1], side[1])} {shown}"

    lines = ["| Target | Measured (medians) | Needs | Result |",
             "|---|---|:---:|:---:|"]
    zc = med(("graphstore", "get_zero_copy"))
    for t in targets:
        num, den = med(t.num), med(t.den)
        if t.ratio is not None:
            ratio = med(t.ratio)
        else:
            ratio = num / den if num is not None and den else None
        verdict = ("n/a (not measured)" if ratio is None
                   else "pass" if ratio >= t.need else "**FAIL**")
        value = "—" if ratio is None else f"{ratio:.2f}×"
        how = f" ({t.how})" if t.how else ""
        sign = "→" if t.ratio is not None else "="
        lines.append(f"| {t.label} | {name(t.num)} ÷ {name(t.den)} {sign} {value}{how} "
                     f"| ≥ {t.need:g}× | {verdict} |")
        if t.num[1] == "put_first_gbps" and t.den[0] == "graphstore":
            zc_text = "—" if zc is None else ("yes" if zc >= 0.5 else "no")
            zc_verdict = ("n/a (not measured)" if zc is None
                          else "pass" if zc >= 0.5 else "**FAIL**")
            lines.append(f"| get is zero-copy | graphstore: {zc_text} (read-only array, "
                         f"data in the store's shared mapping) | yes | {zc_verdict} |")
    return lines
