"""B2 steady on APScheduler 3: J interval jobs every second, phases spread
over the second (start_date = T0 + i/J s), for D seconds, on the memory
job store or SQLAlchemyJobStore (SQLite). BackgroundScheduler with its
ThreadPoolExecutor and APScheduler's job defaults. The function returns
its own start time (time.time()); an EVENT_JOB_EXECUTED listener pairs it
with the event's scheduled_run_time. Missed = expected slots that never
ran (APScheduler also reports EVENT_JOB_MISSED and skips runs whose
previous one still runs, max_instances=1).

usage: /usr/bin/python3 b2_steady.py J D STORE [LEAD_S] [WORKERS]"""
import datetime
import os
import sys
import threading
import time

from apscheduler.events import (EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES,
                                EVENT_JOB_MISSED)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from common import cpu, emit, mono, pct, versions

J = int(sys.argv[1])
D = int(sys.argv[2])
STORE = sys.argv[3]
LEAD = float(sys.argv[4]) if len(sys.argv) > 4 else 3
WORKERS = int(sys.argv[5]) if len(sys.argv) > 5 else 10

if STORE == "memory":
    jobstore = MemoryJobStore()
else:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    jobstore = SQLAlchemyJobStore(url=STORE)

step_us = 1000000 // J
T0_us = (time.time_ns() // 1000000 + int(LEAD * 1000)) * 1000
T_end_us = T0_us + D * 1000000
records = []  # (job_id, scheduled_us, started_us)
counters = {"missed_events": 0, "max_instances": 0, "errors": 0, "runs": 0}
lock = threading.Lock()


def tick():
    return time.time_ns() // 1000


def listener(ev):
    with lock:
        if ev.code == EVENT_JOB_EXECUTED:
            counters["runs"] += 1
            sched_us = round(ev.scheduled_run_time.timestamp() * 1e6)
            records.append((ev.job_id, sched_us, ev.retval))
        elif ev.code == EVENT_JOB_MISSED:
            counters["missed_events"] += 1
        elif ev.code == EVENT_JOB_MAX_INSTANCES:
            counters["max_instances"] += 1
        else:
            counters["errors"] += 1


utc = datetime.timezone.utc
sched = BackgroundScheduler(jobstores={"default": jobstore},
                            executors={"default": ThreadPoolExecutor(WORKERS)}, timezone=utc)
sched.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR |
                   EVENT_JOB_MAX_INSTANCES)
sched.start()
w0 = mono()
index = {}
for i in range(J):
    jid = "tick%d" % i
    index[jid] = i
    start = datetime.datetime.fromtimestamp((T0_us + i * step_us) / 1e6, utc)
    sched.add_job(tick, "interval", seconds=1, start_date=start, id=jid)
create_s = mono() - w0
late_create = time.time_ns() // 1000 > T0_us


def sleep_until(us):
    while True:
        d = us / 1e6 - time.time()
        if d <= 0:
            return
        time.sleep(min(d, 0.5))


sleep_until(T0_us)
c0 = cpu()
with lock:
    r0 = counters["runs"]
sleep_until(T_end_us + 1500000)
cpu_s = cpu() - c0
with lock:
    window_runs = counters["runs"] - r0
sched.pause()
# Without waiting: a job store that cannot keep up (SQLite at 2,000 runs/s)
# would hold shutdown for minutes with its backlog; the window is over.
sched.shutdown(wait=False)

seen = {}
lat = []
off_grid = 0
with lock:
    snapshot = list(records)
for jid, s, started in snapshot:
    i = index.get(jid)
    k, rem = divmod(s - T0_us - (i or 0) * step_us, 1000000)
    if i is not None and T0_us <= s < T_end_us and rem == 0:
        key = (jid, s)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] == 1:
            lat.append(started - s)
    elif s < T_end_us:
        off_grid += 1
missed = doubled = 0
for i in range(J):
    for k in range(D):
        n = seen.get(("tick%d" % i, T0_us + i * step_us + k * 1000000))
        if not n:
            missed += 1
        elif n > 1:
            doubled += n - 1
lat.sort()
ms = lambda v: None if v is None else v / 1000
emit(dict(impl="apscheduler", store=STORE.split(":")[0], jobs=J, seconds=D, expected=J * D,
          runs=len(lat), missed=missed, doubled=doubled, off_grid=off_grid,
          p50_ms=ms(pct(lat, 50)), p99_ms=ms(pct(lat, 99)), max_ms=ms(lat[-1] if lat else None),
          min_ms=ms(lat[0] if lat else None), cpu_s=cpu_s,
          cpu_per_1000=cpu_s / window_runs * 1000 if window_runs else None,
          create_s=create_s, late_create=late_create, events=counters,
          settings=dict(scheduler="BackgroundScheduler", executor="ThreadPoolExecutor(%d)" % WORKERS,
                        jobstore="MemoryJobStore" if STORE == "memory" else "SQLAlchemyJobStore(sqlite)",
                        job_defaults="misfire_grace_time=1, coalesce=False, max_instances=1"),
          versions=versions()))
sys.stdout.flush()
os._exit(0)  # the executor's threads may still be draining the backlog
