"""The chaos soak's checks (bench/soak.py) on hand-made rows: a checker that let a lost job,
an unexplained duplicate or a missing tick through would make every soak pass."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bench import soak

T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def job(
    job_id: int,
    n: int | None = None,
    status: str = "succeeded",
    *,
    schedule_name: str | None = None,
    run_at: datetime = T0,
    dedupe_key: str | None = None,
) -> soak.Job:
    task_type = soak.LEDGER_TASK if n is not None else soak.TICK_TASK
    return soak.Job(job_id, task_type, status, n, schedule_name, run_at, dedupe_key)


def run(job_id: int, attempt: int, worker: str, seconds: float) -> soak.Execution:
    return soak.Execution(job_id, attempt, worker, at(seconds))


def audit(job_id: int, attempt: int, worker: str, status: str, seconds: float) -> soak.AuditRow:
    return soak.AuditRow(job_id, attempt, worker, status, at(seconds))


def chaos(
    kills: dict[str, float] | None = None, restarts: tuple[tuple[float, float], ...] = ()
) -> soak.Chaos:
    result = soak.Chaos()
    result.kills = {w: at(s) for w, s in (kills or {}).items()}
    result.restarts = [soak.Restart(at(b), at(e), "fast") for b, e in restarts]
    return result


def test_a_success_needs_its_succeeded_audit_row() -> None:
    assert soak.explain(run(1, 1, "w1", 0), audit(1, 1, "w1", "succeeded", 1), chaos(), 3) == (
        "success"
    )
    assert soak.explain(run(1, 1, "w1", 0), None, chaos(), 3).startswith("unexplained")


def test_a_duplicate_from_a_sigkill_needs_a_rescue_after_the_kill() -> None:
    execution = run(1, 1, "w1", 10)
    rescued = audit(1, 1, "w1", "rescued", 14)
    assert soak.explain(execution, rescued, chaos({"w1": 10.5}), 3) == "sigkill"
    # the statement the worker sent before dying ran on the server just after the kill
    assert soak.explain(execution, rescued, chaos({"w1": 9.99}), 3) == "sigkill"
    # rescued before the kill: the worker lost the lease while alive, the kill came later
    assert soak.explain(execution, rescued, chaos({"w1": 14.5}), 3).startswith("unexplained")
    # another worker was killed
    assert soak.explain(execution, rescued, chaos({"w2": 10.5}), 3).startswith("unexplained")
    # killed, but the attempt ended otherwise (its worker gave it back or retried it)
    cancelled = audit(1, 1, "w1", "cancelled", 10.1)
    assert soak.explain(execution, cancelled, chaos({"w1": 10.5}), 3).startswith("unexplained")


def test_a_duplicate_from_a_restart_must_overlap_the_restart() -> None:
    restart = ((20.0, 21.0),)
    rescued = audit(1, 1, "w1", "rescued", 25)
    assert soak.explain(run(1, 1, "w1", 19.5), rescued, chaos(restarts=restart), 3) == "restart"
    # recorded within a lease (3 s) + the tail after the restart ended
    assert soak.explain(run(1, 1, "w1", 24.5), rescued, chaos(restarts=restart), 3) == "restart"
    late = run(1, 1, "w1", 25.5)
    assert soak.explain(
        late, audit(1, 1, "w1", "rescued", 30), chaos(restarts=restart), 3
    ).startswith("unexplained")
    # ended before the restart began
    early = audit(1, 1, "w1", "retry", 19.0)
    assert soak.explain(run(1, 1, "w1", 18), early, chaos(restarts=restart), 3).startswith(
        "unexplained"
    )


def test_account_executions_counts_duplicates_by_cause_and_flags_the_rest() -> None:
    jobs = [job(1, n=0), job(2, n=1), job(3, n=2), job(4, n=3)]
    ledger = [
        run(1, 1, "w1", 10),  # killed mid-job, then run again by w2
        run(1, 2, "w2", 15),
        run(2, 1, "w2", 16),  # ran twice with nothing to explain it
        run(2, 2, "w3", 40),
        run(3, 1, "w3", 41),  # a plain single run
    ]  # job 4 succeeded without any recorded execution
    rows = [
        audit(1, 1, "w1", "rescued", 14),
        audit(1, 2, "w2", "succeeded", 15.1),
        audit(2, 1, "w2", "rescued", 20),
        audit(2, 2, "w3", "succeeded", 40.1),
        audit(3, 1, "w3", "succeeded", 41.1),
        audit(4, 1, "w3", "succeeded", 42),
    ]
    result = soak.account_executions(jobs, ledger, rows, chaos({"w1": 11}), 3)
    assert result.total == 5
    assert result.duplicate_jobs == 2
    assert dict(result.explained) == {"sigkill": 1}
    assert [u.split(":")[0] for u in result.unexplained] == ["job 2 attempt 1 on w2"]
    assert result.never_ran == [4]
    assert result.no_audit == 0


def test_an_execution_without_an_audit_row_is_counted() -> None:
    result = soak.account_executions([job(1, n=0)], [run(1, 1, "w1", 1)], [], chaos(), 3)
    assert result.no_audit == 1
    assert result.never_ran == [1]
    assert len(result.unexplained) == 1


def test_account_lost_finds_missing_doubled_and_unfinished_jobs() -> None:
    last_tick = T0
    jobs = [
        job(1, n=0),
        job(2, n=1, status="running"),
        job(3, n=1),
        job(4, n=3, status="failed"),
        job(5, schedule_name="s", run_at=T0, status="pending"),  # checked tick, not run
        job(6, schedule_name="s", run_at=T0 + timedelta(minutes=1), status="pending"),  # later
    ]
    lost = soak.account_lost(jobs, expected_n=4, last_tick=last_tick)
    assert lost.missing == [2]
    assert lost.doubled == [1]
    assert lost.unfinished == {"running": 1, "failed": 1, "pending": 1}
    assert lost.count == 4
    clean = soak.account_lost([job(1, n=0), job(2, n=1)], expected_n=2, last_tick=last_tick)
    assert (clean.count, clean.doubled) == (0, [])


def tick_job(
    job_id: int, name: str, minute: int, status: str = "succeeded", key: str = ""
) -> soak.Job:
    tick = soak.floor_minute(T0) + timedelta(minutes=minute)
    return job(
        job_id,
        status=status,
        schedule_name=name,
        run_at=tick,
        dedupe_key=key or soak.tick_key(name, tick),
    )


def test_account_ticks_wants_each_minute_once_with_its_key_and_run() -> None:
    created = {"a": T0, "b": T0}  # 12:00:30, so the first tick is 12:01
    last_tick = soak.floor_minute(T0) + timedelta(minutes=3)  # 12:03: three ticks each
    b2 = soak.floor_minute(T0) + timedelta(minutes=2)
    jobs = [
        tick_job(1, "a", 1),
        tick_job(2, "a", 2),
        tick_job(3, "a", 3),
        tick_job(4, "a", 4),  # after the checked range: fine
        tick_job(5, "b", 1),
        tick_job(6, "b", 1),  # doubled
        tick_job(7, "b", 3, key="schedule:b:wrong"),  # not the scheduler's key: b 12:03 missing
        # b 12:02, rescued after a kill: its run_at moved on, its key still names the tick
        job(8, schedule_name="b", run_at=b2 + timedelta(seconds=37),
            dedupe_key=soak.tick_key("b", b2)),
    ]  # fmt: skip
    ran = {1, 2, 3, 4, 5, 6, 8}  # job 7 never ran
    ticks = soak.account_ticks(jobs, created, last_tick, ran)
    assert (ticks.expected, ticks.enqueued) == (6, 5)
    assert ticks.doubled == ["b 12:01 x2"]
    assert ticks.missing == ["b 12:03"]
    assert ticks.not_run == []
    assert ticks.bad_keys == ["b job 7: schedule:b:wrong"]


def test_a_clean_run_has_no_failures_and_each_problem_is_named() -> None:
    clean = soak.failures_of(
        soak.Lost(), soak.Executions(), soak.Ticks(expected=3, enqueued=3), soak.Chaos(), True
    )
    assert clean == []
    broken = soak.Chaos()
    broken.stuck = ["w9"]
    broken.term_exit_codes[1] += 1
    problems = soak.failures_of(
        soak.Lost(missing=[7]), soak.Executions(), soak.Ticks(), broken, False
    )
    text = "\n".join(problems)
    for phrase in ("did not drain", "missing", "no tick was checked", "w9", "unexpected codes"):
        assert phrase in text


def test_a_child_run_before_its_parents_success_or_a_stranded_job_fails_the_soak() -> None:
    edges = [
        soak.Edge(child_id=2, parent_id=1, parent_status="succeeded", parent_finished_at=at(5)),
        soak.Edge(child_id=3, parent_id=1, parent_status="succeeded", parent_finished_at=at(5)),
        soak.Edge(child_id=4, parent_id=9, parent_status="failed", parent_finished_at=at(5)),
        soak.Edge(child_id=5, parent_id=1, parent_status="succeeded", parent_finished_at=at(5)),
    ]
    ledger = [
        run(1, 1, "w1", 4),
        run(2, 1, "w1", 5.5),  # after: fine
        run(3, 1, "w2", 4.9),  # a first, killed execution before the parent finished
        run(3, 2, "w2", 6),
        run(4, 1, "w1", 7),  # its parent never succeeded
    ]  # job 5 never ran (its loss is account_lost's business)
    flows = soak.account_workflows(edges, ledger, stranded=0)
    assert flows.edges == 4
    assert [line.split(";")[0] for line in flows.early] == [
        f"job 3 ran at {at(4.9):%H:%M:%S.%f}",
        f"job 4 ran at {at(7):%H:%M:%S.%f}",
    ]
    clean = soak.account_workflows(edges[:2][:1], ledger, stranded=0)
    checks = (soak.Lost(), soak.Executions(), soak.Ticks(expected=3, enqueued=3), soak.Chaos())
    assert soak.failures_of(*checks, True, flows=clean) == []
    problems = "\n".join(soak.failures_of(*checks, True, flows=soak.Workflows(stranded=2)))
    assert "2 workflow job(s) stranded" in problems
    assert "before a parent's success" in "\n".join(soak.failures_of(*checks, True, flows=flows))
