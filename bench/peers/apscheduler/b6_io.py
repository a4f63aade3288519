"""B6 I/O-bound handlers on APScheduler 3: N one-shot (date) jobs due now
whose function waits 50 ms, in time.sleep(0.05) ("sleep") or on one
urllib GET to the local server that answers after 50 ms ("http"; urllib
opens a connection per request). BackgroundScheduler, memory job store,
ThreadPoolExecutor(C): one thread per job running at once, APScheduler's
way to run C jobs at a time. jobs/s from the first function start to the
N-th EVENT_JOB_EXECUTED.
kib_per_handler: VmRSS while the most functions were waiting at once
(sampled as that count climbs, last at C) minus VmRSS before the run,
divided by the functions waiting at that sample, in KiB.

usage: /usr/bin/python3 b6_io.py N sleep|http C [TARGET_URL]"""
import datetime
import gc
import sys
import threading
import time
import urllib.request

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from common import cpu, emit, mono, versions

N = int(sys.argv[1])
VARIANT = sys.argv[2]
C = int(sys.argv[3])
TARGET = sys.argv[4] if len(sys.argv) > 4 else None
assert VARIANT == "sleep" or (VARIANT == "http" and TARGET), __doc__


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


lock = threading.Lock()
state = {"done": 0, "errors": 0, "missed": 0, "first": None, "last": None, "first_error": None,
         "waiting": 0, "peak": 0, "rss_at": None, "waiting_at": None}
MARK_STEP = max(1, C // 20)
marks = {"next": MARK_STEP}
finished = threading.Event()


def io():
    with lock:
        if state["first"] is None:
            state["first"] = mono()
        state["waiting"] += 1
        if state["waiting"] > state["peak"]:
            state["peak"] = state["waiting"]
            if state["peak"] >= marks["next"]:
                state["rss_at"], state["waiting_at"] = rss_kib(), state["peak"]
                marks["next"] = float("inf") if state["peak"] >= C else min(marks["next"] + MARK_STEP, C)
    try:
        if VARIANT == "sleep":
            time.sleep(0.05)
        else:
            with urllib.request.urlopen(TARGET, timeout=30) as r:
                r.read()
                if r.status != 200:
                    raise RuntimeError("status %d" % r.status)
    finally:
        with lock:
            state["waiting"] -= 1


def listener(ev):
    with lock:
        if ev.code == EVENT_JOB_EXECUTED:
            state["done"] += 1
        elif ev.code == EVENT_JOB_MISSED:
            state["missed"] += 1
        else:
            state["errors"] += 1
            state["first_error"] = state["first_error"] or repr(ev.exception)
        if state["done"] + state["missed"] + state["errors"] >= N:
            state["last"] = mono()
            finished.set()


sched = BackgroundScheduler(
    jobstores={"default": MemoryJobStore()},
    executors={"default": ThreadPoolExecutor(C)},
    job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
    timezone=datetime.timezone.utc,
)
sched.add_listener(listener, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_ERROR)
# Started paused so that creation is timed apart from the run.
sched.start(paused=True)
now = datetime.datetime.now(datetime.timezone.utc)
w0 = mono()
for i in range(N):
    sched.add_job(io, "date", run_date=now, id="io%d" % i)
create_s = mono() - w0
gc.collect()
rss0 = rss_kib()
c1 = cpu()
sched.resume()
ok = finished.wait(timeout=3600)
run_cpu = cpu() - c1
left = len(sched.get_jobs())
sched.shutdown(wait=True)
run_s = (state["last"] - state["first"]) if ok and state["first"] else None
emit(dict(impl="apscheduler", store="memory", variant=VARIANT, concurrency=C, n=N,
          done=state["done"], missed=state["missed"], errors=state["errors"],
          first_error=state["first_error"], left=left, create_s=create_s,
          run_s=run_s, jobs_per_s=(state["done"] / run_s) if run_s else None, run_cpu_s=run_cpu,
          peak_waiting=state["peak"], waiting_at=state["waiting_at"], rss0_kib=rss0,
          rss_at_kib=state["rss_at"],
          kib_per_handler=(state["rss_at"] - rss0) / state["waiting_at"] if state["rss_at"] else None,
          settings=dict(scheduler="BackgroundScheduler", executor="ThreadPoolExecutor(%d)" % C,
                        jobstore="MemoryJobStore", misfire_grace_time=None,
                        handler="time.sleep(0.05)" if VARIANT == "sleep"
                        else "urllib.request.urlopen GET (server answers after 50 ms)"),
          versions=versions()))
