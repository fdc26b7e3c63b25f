"""tools/demo's report: what the guest's tools said, from the console log.

The demo plan (Tests/guest/plans/demo.sh) prints each tool's --json output
as `DEMO-JSON <name> {...}`; this turns them into a short report.

    python3 -m guestbed.demo <console.log>
"""

import json
import sys


def collect(lines):
    out = {}
    for line in lines:
        i = line.find("DEMO-JSON ")
        if i < 0:
            continue
        name, _, text = line[i + len("DEMO-JSON "):].partition(" ")
        try:
            out[name] = json.loads(text)
        except ValueError:
            out[name] = {"error": f"not JSON: {text[:80]}"}
    return out


def _features(detail):
    """The feature list of a detail string (`split ring; F1,F2,...` or `..., features F1,F2`)."""
    if "features " in detail:
        return detail.split("features ", 1)[1]
    if "; " in detail:
        return detail.split("; ", 1)[1]
    return detail


def _port_lines(fwd):
    rows = []
    for i, p in enumerate(fwd.get("ports", [])):
        fb = p.get("fallback")
        backend = (f"kernel ({fb['interface']}, fallback: {fb['because']})" if fb
                   else "userspace (VFIO)" if p.get("path") == "vfio" else p.get("path", "?"))
        detail = p.get("detail", "")
        ring = detail.split(";", 1)[0] if p.get("path") == "vfio" else ""
        rows.append(f"  net port {i} {p.get('port')}: {backend}{', ' + ring if ring else ''}; "
                    f"rx {p.get('rx_packets', 0)} tx {p.get('tx_packets', 0)} drops {p.get('drops', 0)}")
        if p.get("path") == "vfio":
            rows.append(f"    negotiated: {_features(detail)}")
    return rows


def _fio_job(doc):
    jobs = doc.get("jobs") or [{}]
    return jobs[0]


def _pct(clat, p):
    v = (clat.get("percentile") or {}).get(f"{p:.6f}")
    return f"{v / 1000:.0f} us" if isinstance(v, (int, float)) else "-"


def report(docs):
    rows = ["", "== vio demo report =="]
    fwd = docs.get("fwd")
    if fwd and "error" not in fwd:
        rows.append(f"vio-fwd io, host traffic net1 -> net2 (paced by the host): forwarded {fwd.get('forwarded')} frames, "
                    f"dropped {fwd.get('dropped')}, {float(fwd.get('rate_pps', 0)) / 1e6:.4f} Mpps")
        rows += _port_lines(fwd)
        tx = docs.get("txonly")
        if tx and "error" not in tx:
            rows.append(f"vio-fwd txonly, 64 B frames out of net2: {float(tx.get('rate_pps', 0)) / 1e6:.4f} Mpps "
                        f"({tx.get('forwarded')} frames, {float(tx.get('cpu_ns_per_packet', 0)):.0f} ns CPU/packet)")
    else:
        rows.append(f"vio-fwd: no result ({(fwd or {}).get('error', 'missing')})")
    first = True
    for name, label in (("fio-write-verify", "4 KiB random write + CRC-32C verify, QD16"),
                        ("fio-randread-qd1", "4 KiB random read, QD1"),
                        ("fio-randread-qd32", "4 KiB random read, QD32")):
        doc = docs.get(name)
        if not doc or "error" in doc:
            rows.append(f"vio-fio {label}: no result")
            continue
        job = _fio_job(doc)
        vio = job.get("vio", {})
        if first:
            fb = vio.get("fallback")
            backend = (f"kernel ({fb['device']}, fallback: {fb['because']})" if fb
                       else "userspace virtio-blk (VFIO)" if vio.get("backend") == "virtio" else vio.get("backend"))
            rows.append(f"vio-fio on {doc.get('global options', {}).get('filename')}: backend {backend}")
            rows.append(f"    {vio.get('details', '')}")
            first = False
        d = job.get("write") if "write" in name else job.get("read")
        d = d or {}
        clat = d.get("clat_ns", {})
        extra = ""
        ver = vio.get("verify") or {}
        if "write" in name and ver:
            extra = f", verify {ver.get('blocks_ok', '?')} ok / {ver.get('blocks_bad', '?')} bad"
        rows.append(f"  {label}: {float(d.get('iops', 0)):.0f} IOPS, latency p50 {_pct(clat, 50)} p99 {_pct(clat, 99)} "
                    f"p99.9 {_pct(clat, 99.9)}{extra}")
    rows.append("(guest under TCG software emulation: figures show the path works, not the hardware's speed)")
    return "\n".join(rows)


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 64
    with open(argv[1], errors="replace") as f:
        docs = collect(f.read().splitlines())
    print(report(docs))
    return 0 if docs else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
