#!/usr/bin/env python3
"""Reads a Prometheus server's HTTP query API (/api/v1/query) for
Tests/host/prometheus.sh and compares what it scraped with a tool's own
final summary (JSON). Values are taken with last_over_time(...[10m]): the
last sample scraped, not hidden by the staleness marker Prometheus writes
once the tool has exited.

  prom_query.py value PROM QUERY              prints the sum of the result ("none": no series)
  prom_query.py fwd PROM JOB SUMMARY.json     vio-fwd: per port counters, exact
  prom_query.py fio PROM JOB FIO.json         vio-fio: per job (queue) bytes, I/Os, requests, exact
Exit 0 when every value matches, 1 otherwise; one line per comparison.
"""
import json
import sys
import urllib.parse
import urllib.request
from decimal import Decimal


def query(prom, q):
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"query {q!r}: {body}")
    return body["data"]["result"]


def exact(v):
    """A sample value ("12345") as an int; a non-integer stays a Decimal (never equal to an int count)."""
    d = Decimal(v)
    return int(d) if d == d.to_integral_value() else d


def last(prom, metric, labels):
    sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
    res = query(prom, f"sum(last_over_time({metric}{{{sel}}}[10m]))")
    return exact(res[0]["value"][1]) if res else None


def compare(rows):
    bad = 0
    for name, scraped, summary in rows:
        ok = scraped is not None and scraped == summary
        bad += not ok
        print(f"{'ok' if ok else 'MISMATCH'} {name}: prometheus {scraped}, summary {summary}")
    return 1 if bad or not rows else 0


def fwd(prom, job, path):
    s = json.load(open(path))
    rows = []
    for i, p in enumerate(s["ports"]):
        labels = {"job": job, "port": str(i)}
        for key in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "tx_dropped", "tx_ring_full", "rx_errors", "notifications"):
            rows.append((f"port {i} {key}", last(prom, f"vio_net_{key}_total", labels), p[key]))
        rows.append((f"port {i} reconnects", last(prom, "vio_net_reconnects_total", labels), p["reconnects"]))
        rows.append((f"port {i} recoveries", last(prom, "vio_net_recoveries_total", labels), p["recoveries"]))
        rows.append((f"port {i} link changes", last(prom, "vio_net_link_changes_total", labels), p["link_events"]))
    return compare(rows)


def fio(prom, job, path):
    s = json.load(open(path))
    rows = []
    for j in s["jobs"]:
        q = str(j["vio"]["queue"])
        labels = {"job": job, "queue": q}
        rows.append((f"queue {q} written bytes", last(prom, "vio_blk_written_bytes_total", labels), j["write"]["io_bytes"]))
        rows.append((f"queue {q} read bytes", last(prom, "vio_blk_read_bytes_total", labels), j["read"]["io_bytes"]))
        for op in ("write", "read"):
            rows.append((f"queue {q} {op} latency count", last(prom, "vio_blk_latency_seconds_count", {**labels, "op": op}), j[op]["total_ios"]))
            rows.append(
                (f"queue {q} {op} latency +Inf bucket", last(prom, "vio_blk_latency_seconds_bucket", {**labels, "op": op, "le": "+Inf"}), j[op]["total_ios"]))
        for key, metric in (("requests", "requests"), ("notifications", "notifications"), ("interrupts", "interrupts"),
                            ("errors", "errors"), ("device_requests", "device_requests")):
            rows.append((f"queue {q} {key}", last(prom, f"vio_blk_{metric}_total", labels), j["vio"][key]))
    return compare(rows)


def main(argv):
    if len(argv) == 3 and argv[0] == "value":
        res = query(argv[1], argv[2])
        print(sum(exact(r["value"][1]) for r in res) if res else "none")
        return 0
    if len(argv) == 4 and argv[0] in ("fwd", "fio"):
        return (fwd if argv[0] == "fwd" else fio)(argv[1], argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
