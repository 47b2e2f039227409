"""A cluster whose every connection is mutual TLS.

1. Make a throwaway certificate authority and a certificate for this host with the
   ``openssl`` command-line tool: the same commands docs/security.md gives for a real
   cluster (there, one certificate per host, and the CA's key kept offline).
2. Start a local cluster with them: ``init(tls_cert=..., tls_key=..., tls_ca=...)`` hands
   the files to its scheduler and workers, so the driver, the scheduler, the workers and
   actor processes all require and verify certificates on every connection; the cluster
   token is still checked inside TLS.
3. Run tasks whose arrays cross between two (simulated) hosts, and an actor.

A cluster started by hand takes the same files: ``graphstore scheduler --tls-cert
node.pem --tls-key node-key.pem --tls-ca ca.pem``, the same options on ``graphstore
worker``, ``graphstore status`` and the other commands (or GRAPHSTORE_TLS_CERT,
GRAPHSTORE_TLS_KEY, GRAPHSTORE_TLS_CA).

Run: python examples/tls_cluster.py [DIRECTORY]   (certificates go to DIRECTORY, or to
a temporary directory removed at the end)
"""
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import graphstore


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path, hosts=("localhost", "127.0.0.1")) -> dict:
    """A CA, and a certificate for ``hosts`` signed by it; returns init()'s TLS keywords.

    The certificate serves both as a server's (scheduler, worker) and as a client's
    (every process connects to others): its extended key usage names both."""
    directory.mkdir(parents=True, exist_ok=True)
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", "ca-key.pem", "-out", "ca.pem",
            "-days", "30", "-subj", "/O=graphstore example/CN=graphstore example CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}"
                     for h in hosts)
    (directory / "node.ext").write_text(
        f"subjectAltName={names}\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n")
    openssl("req", *curve, "-keyout", "node-key.pem", "-out", "node.csr",
            "-subj", f"/O=graphstore example/CN={hosts[0]}", cwd=directory)
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
            "-CAcreateserial", "-days", "30", "-extfile", "node.ext", "-out", "node.pem",
            cwd=directory)
    (directory / "node-key.pem").chmod(0o600)
    (directory / "ca-key.pem").chmod(0o600)
    return {"tls_cert": str(directory / "node.pem"), "tls_key": str(directory / "node-key.pem"),
            "tls_ca": str(directory / "ca.pem")}


@graphstore.remote
def checksum(array):
    return float(array.sum()), socket.gethostname()


@graphstore.remote
def noise(n, seed):
    return np.random.default_rng(seed).standard_normal(n)


@graphstore.remote
class Totals:
    def __init__(self):
        self.total = 0.0

    def add(self, array):
        self.total += float(array.sum())
        return self.total


def main(directory: Path) -> None:
    tls = make_certificates(directory)
    print(f"certificates in {directory}: ca.pem, node.pem, node-key.pem")

    # Two workers that pretend to be on two hosts, so objects travel over TCP (TLS).
    ctx = graphstore.init(num_cpus=2, worker_node_ids=["host-a", "host-b"], node_id="host-a",
                          **tls)
    try:
        print(f"cluster at {ctx.address}, every connection mutual TLS")
        on_b = {"resources": {"node:host-b": 0.001}}
        data = np.arange(5_000_000, dtype=np.float64)            # 40 MB, put on host-a
        total, _ = graphstore.get(checksum.options(**on_b).remote(graphstore.put(data)))
        print(f"host-b summed the 40 MB array from host-a: {total:.0f}")
        made = noise.options(**on_b).remote(2_000_000, seed=7)    # 16 MB made on host-b
        back = graphstore.get(made)
        print(f"host-a got the 16 MB array made on host-b: mean {back.mean():+.4f}")

        totals = Totals.options(**on_b).remote()
        for _ in range(3):
            running = graphstore.get(totals.add.remote(made))
        print(f"the actor on host-b added it three times: {running:+.1f}")

        status = graphstore.cluster_status()
        print(f"{status['workers']} workers on {status['nodes']} hosts, "
              f"{status['counts']['done']} tasks done")
    finally:
        graphstore.shutdown()
    print("done: scheduler, workers and actor spoke TLS with certificates from the CA")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="graphstore-tls-") as tmp:
            main(Path(tmp))
