"""Readiness, probes and /proc: what the harness reads of its children and of the machine."""

import os
import re
import socket
import time

from processes import BenchError

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_ports(count):
    socks, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            socks.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in socks:
            sock.close()
    return ports


def resp_command(port, *args, timeout=2.0):
    """Send one command to a RESP server on 127.0.0.1:port; return the raw reply."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"$"):
                header, _, rest = data.partition(b"\r\n")
                if int(header[1:]) < 0 or len(rest) >= int(header[1:]) + 2:
                    break
            elif data.endswith(b"\r\n"):
                break
    return data


def resp_int(reply):
    return int(reply[1:].strip()) if reply.startswith(b":") else None


def http_get_status(port, timeout=1.0):
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n" % (HOST.encode(), port))
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match.group(1)) if match else None


def wait_until(what, check, deadline, procs):
    last = None
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            if check():
                return
        except OSError as exc:
            last = exc
        time.sleep(0.05)  # polling interval, bounded by the deadline
    raise BenchError(f"{what} not ready in time (last error: {last})")


def proc_status(pid):
    """VmRSS and VmHWM of a process, in KiB."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(value.split()[0])
    except OSError:
        pass
    return values


def open_fds(pid):
    """Descriptors a process has open (None if /proc cannot tell)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def nofile_limit(pid):
    """The soft open-file limit of a process, from /proc/<pid>/limits."""
    try:
        with open(f"/proc/{pid}/limits") as handle:
            for line in handle:
                if line.startswith("Max open files"):
                    value = line.split()[3]
                    return int(value) if value.isdigit() else value
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def machine_busy():
    """Jiffies of all CPUs from /proc/stat: (busy, total, irq+softirq, steal).

    busy includes irq and softirq time: the kernel charges an interrupt that lands while a
    process runs to that process' stime as well, and loopback TCP runs mostly in softirq."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:9]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]  # guest time is in user
    return user + nice + system + irq + softirq, sum(values[:8]), irq + softirq, steal


def logged_problems(log_dir, keep=5):
    """WARNING and worse lines in the logs of tempestd and the workers: count and first few."""
    found = {}
    for name in sorted(os.listdir(log_dir)):
        if not name.endswith(".log") or not name.startswith(("tempestd", "worker")):
            continue
        with open(os.path.join(log_dir, name), encoding="utf-8", errors="replace") as handle:
            lines = [l.rstrip() for l in handle if re.search(r" (WARNING|ERROR|CRITICAL) |Traceback", l)]
        if lines:
            found[name[:-4]] = {"count": len(lines), "first": lines[:keep]}
    return found


def background_cpu(seconds=1.0):
    """Busy CPU, in % of one core, while nothing of ours runs: other load on the machine."""
    before = machine_busy()
    time.sleep(seconds)  # a measurement window, not a wait for readiness
    after = machine_busy()
    return round(100 * (os.cpu_count() or 1) * (after[0] - before[0]) / max(1, after[1] - before[1]), 1)


def machine_share(before, after, index):
    """Jiffies of column ``index`` of ``machine_busy()`` between two samples, in % of one core."""
    return 100 * (os.cpu_count() or 1) * (after[index] - before[index]) / max(1, after[1] - before[1])


def listening_ports(pid):
    """TCP ports a process listens on (IPv4), from /proc."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:
        return []
    ports = []
    with open("/proc/net/tcp") as handle:
        for line in handle.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
