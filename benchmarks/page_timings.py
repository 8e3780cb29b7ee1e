"""Page timings on a built demo, in one process with Streamlit's AppTest: each page's first run and its
median rerun, and a Review vote on a pair nobody has opened (the rerun the click starts), with feature
attacks off (the default) and on (computed in the background, so the vote must not wait for them).

    SPURAUDIT_HOME=<home with the demo> PYTHONPATH=$PWD python benchmarks/page_timings.py

The demo needs one feature labelled spurious for the Rankings page; the script labels class 0's top feature
(a vote by "bench") when none is.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = ["app.py", "pages/features.py", "pages/rankings.py", "pages/review.py", "pages/data.py", "pages/jobs.py"]


def _timed(at: AppTest) -> float:
    start = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - start
    assert not at.exception, [e.value for e in at.exception]
    return elapsed


def _app(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params["project"] = "demo"
    at.session_state["reviewer"] = "bench"
    at.run()
    if page != "app.py":
        at.switch_page(page)
    return at


def main() -> None:
    from spuraudit import paths
    from spuraudit.audit import Audit
    from spuraudit.project import Project

    project = Project.open(paths.projects_dir() / "demo")
    if not project.spurious_features():
        audit = Audit.open(project)
        project.labels().add_vote(0, int(audit.top_features(0, 1)["feature"].iloc[0]), "background", annotator="bench")
    print("| page | first run | median of 3 reruns |\n|---|---|---|")
    for page in PAGES:
        at = _app(page)
        first = _timed(at)
        reruns = [_timed(at) for _ in range(3)]
        print(f"| {page} | {first:.2f} s | {statistics.median(reruns):.2f} s |")
    for attacks in (False, True):
        at = _app("pages/review.py")
        at.session_state["review_attacks"] = attacks
        _timed(at)
        votes = []
        for _ in range(3):  # each vote moves to the next pair, one not opened in this process before
            at.button(key="vote-background")
            at.button(key="vote-background").click()
            votes.append(_timed(at))
        print(f"| Review: vote, then the next unseen pair (attacks {'on, in the background' if attacks else 'off'}) "
              f"| {votes[0]:.2f} s | {statistics.median(votes[1:]):.2f} s (next two votes) |")


if __name__ == "__main__":
    main()
