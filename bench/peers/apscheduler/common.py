"""Shared by the APScheduler scripts: the monotonic clock, this process's
CPU time and the one result line the harness reads ("BENCH {json}")."""
import json
import resource
import sys
import time


def mono():
    return time.monotonic()


def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def emit(obj):
    sys.stdout.write("BENCH " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def pct(sorted_values, p):
    n = len(sorted_values)
    if n == 0:
        return None
    k = max(1, min(n, -(-p * n // 100)))
    return sorted_values[int(k) - 1]


def versions():
    import apscheduler
    out = {"apscheduler": apscheduler.__version__, "python": sys.version.split()[0]}
    try:
        import sqlalchemy
        out["sqlalchemy"] = sqlalchemy.__version__
    except ImportError:
        pass
    return out
