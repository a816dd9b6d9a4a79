"""Intervals and significance for the evaluation report: is the student's accuracy, and its gap to the teacher, more
than noise from a small test set?

- ``wilson``: the 95% Wilson score interval of a proportion (Wilson 1927); unlike the normal approximation it stays
  inside [0, 1] and behaves at 0% and 100% and with small n.
- ``mean_interval``: the mean of a few runs (seeds) with its 95% Student-t interval, for benchmark tables.
- ``paired``: student minus teacher on the *same* rows: a paired bootstrap interval of the difference in accuracy
  (seeded, so the report is reproducible) and McNemar's exact test on the discordant pairs (the rows where exactly
  one of the two is right), two-sided.
"""

from __future__ import annotations

import math
import random

Z95 = 1.959963984540054


def wilson(right: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """95% interval of right/n, or None when n is 0."""
    if n == 0:
        return None
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# two-sided 95% quantiles of Student's t, by degrees of freedom (t.ppf(0.975, df)); above 30 the normal's is close
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201,
       12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042}  # fmt: skip


def mean_interval(values: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high): the 95% t-interval of the mean of a few runs; with one run the interval is the point.
    With 3 seeds it is wide (t = 4.30): that is the point of showing it."""
    n = len(values)
    if n == 0:
        return None
    mean = sum(values) / n
    if n == 1:
        return mean, mean, mean
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    df = n - 1
    t = T95.get(df) or (T95[max(k for k in T95 if k <= df)] if df <= 30 else Z95)
    half = t * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def mcnemar_exact(student_only: int, teacher_only: int) -> float:
    """Two-sided exact McNemar p-value: under H0 each discordant pair is a fair coin."""
    n = student_only + teacher_only
    if n == 0:
        return 1.0
    k = min(student_only, teacher_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(student_right: list[bool], teacher_right: list[bool], resamples: int = 2000, seed: int = 0) -> dict | None:
    """Student minus teacher accuracy on the same rows: the difference, its 95% paired-bootstrap interval, McNemar's
    exact p-value and whether the difference is significant at 5%. None when there are no paired rows."""
    n = len(student_right)
    if n == 0 or n != len(teacher_right):
        return None
    diffs = [int(s) - int(t) for s, t in zip(student_right, teacher_right)]
    rng = random.Random(seed)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    low, high = means[int(0.025 * resamples)], means[min(resamples - 1, int(0.975 * resamples))]
    student_only = sum(1 for s, t in zip(student_right, teacher_right) if s and not t)
    teacher_only = sum(1 for s, t in zip(student_right, teacher_right) if t and not s)
    p = mcnemar_exact(student_only, teacher_only)
    return {"n": n, "difference": sum(diffs) / n, "ci95": [low, high], "student_only_right": student_only,
            "teacher_only_right": teacher_only, "p_mcnemar": p, "significant": p < 0.05}  # fmt: skip


def describe(result: dict | None) -> str:
    """One sentence for the Markdown report."""
    if result is None:
        return "No rows were scored for both the student and the teacher against gold, so their difference is not tested."
    d, (low, high) = result["difference"], result["ci95"]
    verdict = ("significant at the 5% level" if result["significant"]
               else "**not significant** at the 5% level: on these rows the two cannot be told apart")  # fmt: skip
    return (f"Student minus teacher on the same {result['n']} rows: {100 * d:+.1f} points (95% paired-bootstrap CI "
            f"{100 * low:+.1f} to {100 * high:+.1f}); McNemar exact p = {result['p_mcnemar']:.3g} "
            f"({result['student_only_right']} rows only the student got right, {result['teacher_only_right']} only the "
            f"teacher), {verdict}.")  # fmt: skip
