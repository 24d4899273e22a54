"""PostgreSQL on 127.0.0.1 for the benchmarks' baselines, from Python: a throwaway cluster in a
scratch directory, durability as shipped, driven through psql (no client library needed)."""

import glob
import os
import shutil
import socket
import subprocess
import tempfile


def _bin():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not dirs:
        raise SystemExit("PostgreSQL is missing (apt-get install postgresql)")
    return dirs[-1]


def _as_pg(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if os.getuid() == 0 else cmd


class PgServer:
    def __enter__(self):
        self.work = tempfile.mkdtemp(prefix="netrev-pg-")
        os.chmod(self.work, 0o755)
        if os.getuid() == 0:
            shutil.chown(self.work, user="postgres")
        b = _bin()
        self.data = os.path.join(self.work, "data")
        subprocess.run(_as_pg([f"{b}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust"]),
                       check=True, stdout=subprocess.DEVNULL)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        opts = (f"-p {self.port} -k {self.work} -c listen_addresses=127.0.0.1 -c fsync=on "
                "-c synchronous_commit=on -c shared_buffers=2GB -c work_mem=512MB "
                "-c maintenance_work_mem=1GB -c max_parallel_workers_per_gather=2 -c TimeZone=UTC")
        subprocess.run(_as_pg([f"{b}/pg_ctl", "-D", self.data, "-l", os.path.join(self.work, "log"),
                               "-w", "-o", opts, "start"]), check=True, stdout=subprocess.DEVNULL)
        self.version = self.query("SHOW server_version").split()[0]
        return self

    def __exit__(self, *exc):
        subprocess.run(_as_pg([f"{_bin()}/pg_ctl", "-D", self.data, "-m", "immediate", "stop"]),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.work, ignore_errors=True)

    def psql(self, sql, *extra):
        """Runs SQL (statements separated by semicolons), stopping at the first error."""
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-At", *extra],
                              input=sql, text=True, check=True, capture_output=True).stdout

    def query(self, sql):
        return self.psql(sql).strip()
