"""B4 cron on APScheduler 3: CronTrigger.get_next_fire_time over the workload
of bench/data/cron_mix.txt. One trigger per expression and zone, built once
(as an application would); each call asks for the first fire time strictly
after the previous one.

usage: /usr/bin/python3 b4_cron.py MIX_FILE RESULTS_FILE MIN_SECONDS"""
import datetime
import sys

from apscheduler.triggers.cron import CronTrigger

from common import emit, mono, versions

import pytz


def fields(expr):
    parts = expr.split()
    if len(parts) == 5:
        parts = ["0"] + parts
    second, minute, hour, day, month, dow = parts
    return dict(second=second, minute=minute, hour=hour, day=day, month=month, day_of_week=dow)


def main():
    mix, results, min_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    exprs, zones, starts, chain = [], [], [], 5
    with open(mix) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("expr "):
                exprs.append(line[5:])
            elif line.startswith("zone "):
                zones.append(line[5:])
            elif line.startswith("start "):
                starts.append(int(line.split()[1]))
            elif line.startswith("chain "):
                chain = int(line.split()[1])
    # APScheduler 3 documents pytz zones (zoneinfo works from 3.9 too).
    triggers = [[CronTrigger(timezone=pytz.timezone(z), **fields(e)) for z in zones] for e in exprs]
    utc = datetime.timezone.utc
    one_us = datetime.timedelta(microseconds=1)
    start_dts = [datetime.datetime.fromtimestamp(s, utc) for s in starts]
    out = open(results, "w")
    calls = rounds = 0
    t0 = mono()
    while True:
        for ei in range(len(exprs)):
            for zi in range(len(zones)):
                trig = triggers[ei][zi]
                for sd in start_dts:
                    t = sd
                    for _ in range(chain):
                        if t is not None:
                            t = trig.get_next_fire_time(t, t + one_us)
                        calls += 1
                        if rounds == 0:
                            out.write("%d\n" % (int(t.timestamp()) if t is not None else -1))
        rounds += 1
        el = mono() - t0
        if el >= min_s:
            break
    out.close()
    emit(dict(impl="apscheduler", calls=calls, rounds=rounds, seconds=el, per_s=calls / el,
              versions=versions()))


main()
