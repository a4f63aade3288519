"""B1 burst on APScheduler 3: N one-shot (date) jobs due now, a no-op
function, one process. BackgroundScheduler with its ThreadPoolExecutor, the
memory job store or SQLAlchemyJobStore on SQLite, as APScheduler's user
guide sets them up. misfire_grace_time=None so no job is dropped for being
late (the default of 1 s would discard most of a 100,000-job burst).

usage: /usr/bin/python3 b1_burst.py N STORE [WORKERS]
  STORE: memory | sqlite:///path/to/file.db"""
import datetime
import sys
import threading

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from common import cpu, emit, mono, versions

N = int(sys.argv[1])
STORE = sys.argv[2]
WORKERS = int(sys.argv[3]) if len(sys.argv) > 3 else 10

if STORE == "memory":
    jobstore = MemoryJobStore()
else:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    jobstore = SQLAlchemyJobStore(url=STORE)

lock = threading.Lock()
state = {"done": 0, "errors": 0, "missed": 0, "first": None, "last": None}
finished = threading.Event()


def noop():
    if state["first"] is None:
        state["first"] = mono()


def listener(ev):
    with lock:
        if ev.code == EVENT_JOB_EXECUTED:
            state["done"] += 1
        elif ev.code == EVENT_JOB_MISSED:
            state["missed"] += 1
        else:
            state["errors"] += 1
        if state["done"] + state["missed"] + state["errors"] >= N:
            state["last"] = mono()
            finished.set()


sched = BackgroundScheduler(
    jobstores={"default": jobstore},
    executors={"default": ThreadPoolExecutor(WORKERS)},
    job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
    timezone=datetime.timezone.utc,
)
sched.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
# Started paused so that creation is timed apart from the run.
sched.start(paused=True)
now = datetime.datetime.now(datetime.timezone.utc)
c0, w0 = cpu(), mono()
for i in range(N):
    sched.add_job(noop, "date", run_date=now, id="job%d" % i)
create_s = mono() - w0
create_cpu = cpu() - c0
c1 = cpu()
sched.resume()
ok = finished.wait(timeout=3600)
run_cpu = cpu() - c1
left = len(sched.get_jobs())
sched.shutdown(wait=True)
run_s = (state["last"] - state["first"]) if ok and state["first"] else None
emit(dict(impl="apscheduler", store=STORE.split(":")[0], n=N, done=state["done"],
          missed=state["missed"], errors=state["errors"], left=left,
          create_s=create_s, create_per_s=N / create_s, create_cpu_s=create_cpu,
          run_s=run_s, jobs_per_s=(state["done"] / run_s) if run_s else None, run_cpu_s=run_cpu,
          settings=dict(scheduler="BackgroundScheduler", executor="ThreadPoolExecutor(%d)" % WORKERS,
                        jobstore="MemoryJobStore" if STORE == "memory" else "SQLAlchemyJobStore(sqlite)",
                        misfire_grace_time=None),
          versions=versions()))
