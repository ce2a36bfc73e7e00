#!/usr/bin/env python3
"""ferry agent vs Flux (source-controller + kustomize-controller), same machine, same work, one run.

One git monorepo on the testenv git server with apps/app-NNNN/ x N, each 4 objects (the shape of
bench/agent: Deployment scaled to 0, ServiceAccount, Service, ConfigMap). Each system gets its own
fresh namespace (its source + N apps, interval 60 s, prune on, one target namespace per app) and
is started only after its objects exist; the control plane is settled (idle) before each system.

  Flux:  GitRepository + N Kustomizations (kustomize.toolkit.fluxcd.io/v1), controllers started by
         testenv/flux-up (out of cluster, admin kubeconfig; the bench passes the tuning flags).
  ferry: GitSource + N Releases, the agent binary (FERRY_AGENT_BIN or target/release/ferry-agent).

Per system: time from process start to all Ready; peak RSS (sum of VmHWM of its processes); CPU
seconds (utime+stime of its processes) and the control plane's (kube-apiserver, etcd,
kube-controller-manager) during the sync; API requests during the sync and over one interval at
rest (ferry: ferry_api_requests_total; Flux: rest_client_requests_total of both controllers);
commit-to-applied latency on a separate one-app repo while the N apps stay loaded (ferry: its
generic webhook receiver; Flux: the reconcile.fluxcd.io/requestedAt annotation on the
GitRepository, which is exactly what Flux's notification-controller Receiver writes on a webhook;
see RESULTS.md).

Usage: bench/flux/run.sh [N]   (testenv up; Flux built by testenv/flux-build)
Env: BENCH_ORDER=flux,ferry  BENCH_INTERVAL=60  BENCH_LATENCY_COMMITS=20  BENCH_CLEANUP=0 (keep the
     namespaces; `bench.py cleanup SYSTEM SUFFIX` later)
     BENCH_FLUX_CONCURRENT=8 (kustomize-controller --concurrent; ferry's agent default is 8 workers)
"""
import base64, http.client, json, os, random, shlex, ssl, string, subprocess, sys, tempfile, time, urllib.request
from datetime import datetime, timezone

N = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 1000
INTERVAL = int(os.environ.get("BENCH_INTERVAL", "60"))
ORDER = os.environ.get("BENCH_ORDER", "flux,ferry").split(",")
LAT_COMMITS = int(os.environ.get("BENCH_LATENCY_COMMITS", "20"))
FLUX_CONCURRENT = int(os.environ.get("BENCH_FLUX_CONCURRENT", "8"))
READY_TIMEOUT = int(os.environ.get("BENCH_READY_TIMEOUT", "1800"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.environ.get("FERRY_AGENT_BIN", os.path.join(ROOT, "target/release/ferry-agent"))
TD = os.environ.get("FERRY_TESTENV_DIR", "/tmp/ferry-testenv")
HZ = os.sysconf("SC_CLK_TCK")
ENV = {}
for line in open(os.path.join(TD, "env")):
    line = line.strip()
    if line.startswith("export ") and "=" in line:
        k, v = line[7:].split("=", 1)
        ENV[k] = v.strip("'\"")
os.environ["KUBECONFIG"] = ENV["KUBECONFIG"]
os.environ["PATH"] = ENV["FERRY_TESTENV_BIN"] + ":" + os.environ["PATH"]
SUFFIX = "".join(random.choice(string.ascii_lowercase) for _ in range(5))


def log(msg):
    print(f"[bench-flux {datetime.now(timezone.utc):%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, **kw).stdout


def kubectl_apply(yaml_text):
    subprocess.run(["kubectl", "apply", "--server-side", "--force-conflicts", "-f", "-"], input=yaml_text,
                   text=True, check=True, capture_output=True)


def make_repo(name):
    bare = os.path.join(ENV["FERRY_GIT_ROOT"], f"{name}.git")
    sh(f"git init -q --bare --initial-branch=main {bare}")
    work = tempfile.mkdtemp()
    sh("git init -q --initial-branch=main", cwd=work)
    base = ENV["FERRY_GIT_URL"]
    scheme, rest = base.split("://", 1)
    push = f"{scheme}://{ENV['FERRY_GIT_USER']}:{ENV['FERRY_GIT_PASSWORD']}@{rest}/{name}.git"
    return work, push, f"{base}/{name}.git"


def commit(work, push, msg):
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@x")
    subprocess.run(f"git add -A && git commit -qm {shlex.quote(msg)} && git push -q {shlex.quote(push)} HEAD:refs/heads/main",
                   shell=True, check=True, cwd=work, env=env, capture_output=True)
    return subprocess.run("git rev-parse HEAD", shell=True, cwd=work, capture_output=True, text=True).stdout.strip()


def app_files(i):
    """The same 4 objects per app as bench/agent/bench.py."""
    n = f"app-{i:04d}"
    return {
        "deploy.yaml": f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: {n}}}
spec:
  replicas: 0
  selector: {{matchLabels: {{app: {n}}}}}
  template:
    metadata: {{labels: {{app: {n}}}}}
    spec:
      serviceAccountName: {n}
      containers: [{{name: app, image: registry.invalid/app:1}}]
""",
        "sa.yaml": f"apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {n}}}\n",
        "svc.yaml": f"apiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\nspec:\n  selector: {{app: {n}}}\n  ports: [{{port: 80}}]\n",
        "cm.yaml": f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}}}\ndata: {{value: '0'}}\n",
    }


def api_client():
    """GET/PATCH against the API server with the admin kubeconfig's client certificate (cheaper
    than spawning kubectl every poll on a 2-core machine; the same for both systems)."""
    kc = json.loads(sh("kubectl config view --raw -o json"))
    cluster = kc["clusters"][0]["cluster"]
    user = kc["users"][0]["user"]
    tmp = tempfile.mkdtemp()
    for key, field in [("ca", "certificate-authority-data"), ("crt", "client-certificate-data"), ("key", "client-key-data")]:
        src = cluster if key == "ca" else user
        open(os.path.join(tmp, key), "wb").write(base64.b64decode(src[field]))
    ctx = ssl.create_default_context(cafile=os.path.join(tmp, "ca"))
    ctx.load_cert_chain(os.path.join(tmp, "crt"), os.path.join(tmp, "key"))
    host = cluster["server"].split("://", 1)[1]

    def call(method, path, body=None, ctype=None):
        conn = http.client.HTTPSConnection(host, context=ctx, timeout=30)
        headers = {"Content-Type": ctype} if ctype else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        return json.loads(data) if resp.status == 200 else None
    return call


API = None


def count_ready(path):
    lst = API("GET", path)
    if not lst:
        return 0
    n = 0
    for r in lst["items"]:
        for c in r.get("status", {}).get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                n += 1
    return n


def proc_stat(pid):
    """(utime+stime seconds, VmHWM KiB) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / HZ
    hwm = 0
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"):
            hwm = int(line.split()[1])
    return cpu, hwm


def usage(pids):
    cpu = hwm = 0
    for p in pids:
        c, h = proc_stat(p)
        cpu += c
        hwm += h
    return cpu, hwm / 1024


def control_plane_cpu():
    total = 0
    for name in ("kube-apiserver", "etcd", "kube-controller-manager"):
        try:
            pid = open(os.path.join(TD, "pids", f"{name}.pid")).read().strip()
            total += proc_stat(pid)[0]
        except (OSError, ValueError):
            pass
    return total


def settle():
    """Wait (up to 180 s) until the control plane used < 10% of a core over 0.5 s (bench/apply/run.sh)."""
    for _ in range(360):
        before = control_plane_cpu()
        time.sleep(0.5)
        if control_plane_cpu() - before < 0.05:
            return
    log("warning: control plane still busy after 180 s")


def scrape(urls, metric):
    """{labels: value} summed over the endpoints for one counter."""
    out = {}
    for url in urls:
        for line in urllib.request.urlopen(url, timeout=10).read().decode().splitlines():
            if line.startswith(metric + "{"):
                labels, value = line.rsplit(" ", 1)
                out[labels] = out.get(labels, 0) + float(value)
    return out


WRITE_METHODS = ('method="POST"', 'method="PUT"', 'method="PATCH"', 'method="DELETE"')


def requests_of(system, snap):
    """(total, writes) from a metrics snapshot. ferry labels reads/writes itself; for Flux's
    client-go metric every POST/PUT/PATCH/DELETE counts as a write (kustomize-controller's
    server-side dry-run PATCHes included: they are requests the API server has to serve)."""
    total = sum(snap.values())
    if system == "ferry":
        writes = sum(v for k, v in snap.items() if 'operation="write"' in k)
    else:
        writes = sum(v for k, v in snap.items() if any(m in k for m in WRITE_METHODS))
    return total, writes


def by_method(snap):
    out = {}
    for k, v in snap.items():
        m = k.split('method="', 1)[1].split('"', 1)[0] if 'method="' in k else "?"
        out[m] = out.get(m, 0) + v
    return {k: int(v) for k, v in sorted(out.items()) if v}


def diff(a, b):
    return {k: b.get(k, 0) - a.get(k, 0) for k in b}


class Ferry:
    name = "ferry"
    kind_path = "apis/ferry.dev/v1alpha1"
    plural = "releases"

    def objects(self, ns, url):
        docs = [f"""apiVersion: ferry.dev/v1alpha1
kind: GitSource
metadata: {{name: mono, namespace: {ns}}}
spec: {{url: {url}, ref: {{branch: main}}, interval: 10m, secretRef: {{name: git-auth}}}}
"""]
        for i in range(N):
            docs.append(f"""---
apiVersion: ferry.dev/v1alpha1
kind: Release
metadata: {{name: app-{i:04d}, namespace: {ns}}}
spec: {{sourceRef: {{kind: GitSource, name: mono}}, path: apps/app-{i:04d}, targetNamespace: {ns}-{i:04d}, interval: {INTERVAL}s, prune: true}}
""")
        return "".join(docs)

    def prepare(self, ns):
        sh(f"kubectl apply --server-side --force-conflicts -f {ROOT}/deploy/crds.yaml")
        # The Releases name no service account: they apply as the agent's `ferry-admin`.
        sh(f"kubectl create clusterrolebinding ferry-admin-{ns} --clusterrole=cluster-admin --serviceaccount={ns}:ferry-admin")

    def start(self, ns):
        self.port = 19000 + random.randint(0, 900)
        self.cache = tempfile.mkdtemp()
        self.proc = subprocess.Popen(
            [AGENT, "--namespace", ns, "--watch-namespace", ns, "--leader-elect", "false",
             "--http-addr", f"127.0.0.1:{self.port}", "--metrics-addr", f"127.0.0.1:{self.port + 1000}",
             "--cache-dir", self.cache, "--log-format", "text", "--max-concurrent-per-namespace", "0"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.cache, "agent.log"), "w"),
            env=dict(os.environ, RUST_LOG="warn"))
        self.pids = [self.proc.pid]

    def alive(self):
        return self.proc.poll() is None

    def metrics(self):
        return scrape([f"http://127.0.0.1:{self.port + 1000}/metrics"], "ferry_api_requests_total")

    def latency_objects(self, ns, url):
        return f"""apiVersion: v1
kind: Secret
metadata: {{name: hook-token, namespace: {ns}}}
stringData: {{token: bench-token}}
---
apiVersion: ferry.dev/v1alpha1
kind: Receiver
metadata: {{name: hook, namespace: {ns}}}
spec: {{type: generic, secretRef: {{name: hook-token}}, resources: [latency]}}
---
apiVersion: ferry.dev/v1alpha1
kind: GitSource
metadata: {{name: latency, namespace: {ns}}}
spec: {{url: {url}, ref: {{branch: main}}, interval: 1h, secretRef: {{name: git-auth}}}}
---
apiVersion: ferry.dev/v1alpha1
kind: Release
metadata: {{name: latency, namespace: {ns}}}
spec: {{sourceRef: {{kind: GitSource, name: latency}}, path: ., targetNamespace: {ns}, interval: 1h}}
"""

    def trigger(self, ns):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/hook/{ns}/hook", data=b"{}", method="POST",
                                     headers={"Authorization": "Bearer bench-token", "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self, ns):
        self.proc.terminate()
        self.proc.wait(timeout=60)

    def kill(self):
        # after a failed run: the agent must not outlive the bench
        if getattr(self, "proc", None) and self.proc.poll() is None:
            self.proc.kill()

    def cleanup(self, ns):
        subprocess.run(["kubectl", "delete", "clusterrolebinding", f"ferry-admin-{ns}"], capture_output=True)


class Flux:
    name = "flux"
    kind_path = "apis/kustomize.toolkit.fluxcd.io/v1"
    plural = "kustomizations"

    def objects(self, ns, url):
        docs = [f"""apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: mono, namespace: {ns}, labels: {{ferry.dev/bench: {ns}}}}}
spec: {{url: {url}, ref: {{branch: main}}, interval: 10m, secretRef: {{name: git-auth}}}}
"""]
        for i in range(N):
            docs.append(f"""---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: app-{i:04d}, namespace: {ns}, labels: {{ferry.dev/bench: {ns}}}}}
spec: {{sourceRef: {{kind: GitRepository, name: mono}}, path: ./apps/app-{i:04d}, targetNamespace: {ns}-{i:04d}, interval: {INTERVAL}s, prune: true}}
""")
        return "".join(docs)

    def prepare(self, ns):
        sh(f"{ROOT}/testenv/flux-up --crds")

    def start(self, ns):
        # Flux's own guidance for many objects (vertical scaling): a higher client QPS/burst and
        # a short dependency requeue; --concurrent as many workers as ferry's agent has.
        # --watch-label-selector: only this run's objects, as ferry's --watch-namespace (Flux
        # watches every namespace; a previous run's Kustomizations left in place, e.g. with
        # BENCH_CLEANUP=0, would otherwise be reconciled too).
        sel = f"--watch-label-selector=ferry.dev/bench={ns}"
        kc_args = f"--concurrent={FLUX_CONCURRENT} --kube-api-qps=500 --kube-api-burst=1000 --requeue-dependency=5s {sel}"
        sc_args = f"--kube-api-qps=500 --kube-api-burst=1000 {sel}"
        envf = subprocess.run([f"{ROOT}/testenv/flux-up"], check=True, capture_output=True, text=True,
                              env=dict(os.environ, FERRY_FLUX_KC_ARGS=kc_args, FERRY_FLUX_SC_ARGS=sc_args)).stdout.strip().splitlines()[-1]
        env = {}
        for line in open(envf):
            if line.startswith("export "):
                k, v = line[7:].strip().split("=", 1)
                env[k] = v.strip("'")
        self.pids = [env["FERRY_FLUX_SC_PID"], env["FERRY_FLUX_KC_PID"]]
        self.urls = [env["FERRY_FLUX_SC_METRICS"], env["FERRY_FLUX_KC_METRICS"]]
        self.flags = {"kustomize-controller": kc_args, "source-controller": sc_args}

    def alive(self):
        return all(os.path.exists(f"/proc/{p}") for p in self.pids)

    def metrics(self):
        return scrape(self.urls, "rest_client_requests_total")

    def latency_objects(self, ns, url):
        return f"""apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {{name: latency, namespace: {ns}, labels: {{ferry.dev/bench: {ns}}}}}
spec: {{url: {url}, ref: {{branch: main}}, interval: 1h, secretRef: {{name: git-auth}}}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: latency, namespace: {ns}, labels: {{ferry.dev/bench: {ns}}}}}
spec: {{sourceRef: {{kind: GitRepository, name: latency}}, path: ./, targetNamespace: {ns}, interval: 1h, prune: true}}
"""

    def trigger(self, ns):
        # What notification-controller's Receiver does for a webhook: patch the annotation.
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = json.dumps({"metadata": {"annotations": {"reconcile.fluxcd.io/requestedAt": now}}})
        API("PATCH", f"/apis/source.toolkit.fluxcd.io/v1/namespaces/{ns}/gitrepositories/latency", body,
            "application/merge-patch+json")

    def stop(self, ns):
        subprocess.run([f"{ROOT}/testenv/flux-down"], check=True, capture_output=True)

    def kill(self):
        # rerunnable: stops the controllers if a failed run left them running
        subprocess.run([f"{ROOT}/testenv/flux-down"], capture_output=True)

    def cleanup(self, ns):
        pass


def run(system, mono_url):
    ns = f"{system.name}-bench-{SUFFIX}"
    res = {"system": system.name, "namespace": ns}
    sh(f"kubectl create namespace {ns}")
    system.prepare(ns)
    kubectl_apply("".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}-{i:04d}, labels: {{ferry.dev/bench: '{ns}'}}}}\n" for i in range(N)))
    kubectl_apply(f"""apiVersion: v1
kind: Secret
metadata: {{name: git-auth, namespace: {ns}}}
stringData: {{username: {ENV['FERRY_GIT_USER']}, password: {ENV['FERRY_GIT_PASSWORD']}}}
""")
    kubectl_apply(system.objects(ns, mono_url))
    log(f"{system.name}: {N} apps created in {ns}; settling the control plane")
    settle()
    res["load_avg_start"] = open("/proc/loadavg").read().split()[:3]
    cp0 = control_plane_cpu()
    t0 = time.monotonic()
    system.start(ns)
    path = f"/{system.kind_path}/namespaces/{ns}/{system.plural}"
    ready = 0
    curve = []  # (seconds, Ready) every 30 s: how the rate changes as apps become Ready
    while ready < N:
        time.sleep(1)
        if not system.alive():
            sys.exit(f"{system.name} exited before all Ready ({ready}/{N})")
        ready = count_ready(path)
        elapsed = time.monotonic() - t0
        if not curve or elapsed - curve[-1][0] >= 30:
            curve.append((round(elapsed), ready))
        if elapsed > READY_TIMEOUT:
            break
    res["ready_curve"] = curve
    res["sync_cpu_s"], res["sync_rss_mib"] = usage(system.pids)
    res["sync_cp_cpu_s"] = control_plane_cpu() - cp0
    sync = system.metrics()
    res["sync_requests"], res["sync_writes"] = requests_of(system.name, sync)
    res["sync_by_method"] = by_method(sync)
    if ready < N:
        # Recorded, not fatal: a system that cannot reach all Ready in time is a result too.
        res["ready_s"] = None
        res["ready_at_timeout"] = ready
        res["timeout_s"] = READY_TIMEOUT
        log(f"{system.name}: only {ready}/{N} Ready after {READY_TIMEOUT} s; skipping the rest")
        res["total_cpu_s"], res["total_rss_mib"] = usage(system.pids)
        system.stop(ns)
        res["load_avg_end"] = open("/proc/loadavg").read().split()[:3]
        print("RESULT " + json.dumps(res), flush=True)
        return res
    res["ready_s"] = time.monotonic() - t0
    log(f"{system.name}: all {N} Ready in {res['ready_s']:.1f} s; at rest for one interval")

    time.sleep(10)
    before = system.metrics()
    cpu_before = usage(system.pids)[0]
    time.sleep(INTERVAL + 5)
    rest = diff(before, system.metrics())
    res["rest_requests"], res["rest_writes"] = requests_of(system.name, rest)
    res["rest_by_method"] = by_method(rest)
    res["rest_cpu_s"] = usage(system.pids)[0] - cpu_before

    log(f"{system.name}: commit-to-applied latency, {LAT_COMMITS} commits")
    lwork, lpush, lurl = make_repo(f"{ns}-latency")
    open(os.path.join(lwork, "cm.yaml"), "w").write("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: latency}\ndata: {value: '0'}\n")
    commit(lwork, lpush, "0")
    kubectl_apply(system.latency_objects(ns, lurl))
    cm = f"/api/v1/namespaces/{ns}/configmaps/latency"
    deadline = time.monotonic() + 300
    while API("GET", cm) is None:
        if time.monotonic() > deadline:
            sys.exit(f"{system.name}: latency app not applied within 300 s")
        time.sleep(0.2)
    samples = []
    for i in range(1, LAT_COMMITS + 1):
        open(os.path.join(lwork, "cm.yaml"), "w").write(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: latency}}\ndata: {{value: '{i}'}}\n")
        commit(lwork, lpush, str(i))
        start = time.monotonic()
        system.trigger(ns)
        while True:
            obj = API("GET", cm)
            if obj and obj.get("data", {}).get("value") == str(i):
                break
            if time.monotonic() - start > 120:
                sys.exit(f"{system.name}: commit {i} not applied within 120 s")
            time.sleep(0.01)
        samples.append(time.monotonic() - start)
    samples.sort()
    res["lat_p50_ms"] = samples[len(samples) // 2] * 1000
    res["lat_p99_ms"] = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
    res["lat_max_ms"] = samples[-1] * 1000
    res["total_cpu_s"], res["total_rss_mib"] = usage(system.pids)
    if isinstance(system, Flux):
        res["flags"] = system.flags
    system.stop(ns)
    res["load_avg_end"] = open("/proc/loadavg").read().split()[:3]
    print("RESULT " + json.dumps(res), flush=True)
    return res


def cleanup(system, ns):
    # No controller is left to run the finalizers (they would prune 4N objects): drop them so
    # the namespaces can go.
    patch = '{"metadata":{"finalizers":null}}'
    subprocess.run(f"kubectl -n {ns} get {system.plural} -o name | xargs -r -P 4 -n 50 kubectl -n {ns} patch --type=merge -p '{patch}'",
                   shell=True, capture_output=True)
    if isinstance(system, Flux):
        subprocess.run(f"kubectl -n {ns} get gitrepositories -o name | xargs -r kubectl -n {ns} patch --type=merge -p '{patch}'",
                       shell=True, capture_output=True)
    subprocess.run(["kubectl", "delete", "namespace", ns, "--wait=false"], capture_output=True)
    subprocess.run(["kubectl", "delete", "namespace", "-l", f"ferry.dev/bench={ns}", "--wait=false"], capture_output=True)
    system.cleanup(ns)


def table(results):
    fx, fe = results.get("flux"), results.get("ferry")
    rows = [
        ("time to all Ready (s)", "ready_s", "{:.1f}"),
        ("peak RSS, sum of processes (MiB)", "total_rss_mib", "{:.1f}"),
        ("peak RSS at all Ready (MiB)", "sync_rss_mib", "{:.1f}"),
        ("CPU to all Ready (s)", "sync_cpu_s", "{:.1f}"),
        ("control plane CPU to all Ready (s)", "sync_cp_cpu_s", "{:.1f}"),
        ("API requests to all Ready", "sync_requests", "{:.0f}"),
        ("  of which writes", "sync_writes", "{:.0f}"),
        (f"API requests at rest / {INTERVAL}s interval", "rest_requests", "{:.0f}"),
        ("  of which writes", "rest_writes", "{:.0f}"),
        (f"CPU at rest / {INTERVAL}s interval (s)", "rest_cpu_s", "{:.1f}"),
        ("commit-to-applied p50 (ms)", "lat_p50_ms", "{:.0f}"),
        ("commit-to-applied p99 (ms)", "lat_p99_ms", "{:.0f}"),
    ]
    print(f"\n### N = {N} apps ({4 * N} objects), interval {INTERVAL}s, {datetime.now(timezone.utc):%Y-%m-%dT%H:%MZ}\n")
    print("| | Flux | ferry | Flux / ferry |")
    print("|---|---|---|---|")
    for label, key, fmt in rows:
        a, b = fx.get(key) if fx else None, fe.get(key) if fe else None
        if key == "ready_s":
            for r in (fx, fe):
                if r and r.get("ready_s") is None and "ready_at_timeout" in r:
                    label = f"time to all Ready (s; {r['system']}: {r['ready_at_timeout']}/{N} after {r['timeout_s']} s)"
        ratio = f"{a / b:.1f}x" if a is not None and b else "—"
        if key == "ready_s" and a is None and b and fx and "timeout_s" in fx:
            # Flux stopped at the timeout: the ratio is at least timeout / ferry's time.
            ratio = f"≥ {fx['timeout_s'] / b:.1f}x"
        print(f"| {label} | {fmt.format(a) if a is not None else '—'} | {fmt.format(b) if b is not None else '—'} | {ratio} |")
    for r in (fx, fe):
        if r:
            print(f"\n{r['system']}: load average {' '.join(r['load_avg_start'])} at start, {' '.join(r['load_avg_end'])} at end; "
                  f"requests to Ready by method {r['sync_by_method']}, at rest {r.get('rest_by_method', '(not reached)')}")


def main():
    global API
    API = api_client()
    log(f"monorepo with {N} apps")
    work, push, url = make_repo(f"bench-flux-{SUFFIX}")
    for i in range(N):
        d = os.path.join(work, "apps", f"app-{i:04d}")
        os.makedirs(d)
        for f, text in app_files(i).items():
            open(os.path.join(d, f), "w").write(text)
    commit(work, push, "monorepo")
    systems = {"flux": Flux(), "ferry": Ferry()}
    results = {}
    try:
        for name in ORDER:
            results[name] = run(systems[name], url)
    finally:
        for name in ORDER:
            systems[name].kill()
            if os.environ.get("BENCH_CLEANUP", "1") != "0":
                cleanup(systems[name], f"{name}-bench-{SUFFIX}")
            else:
                log(f"left {name}-bench-{SUFFIX} in place: bench/flux/bench.py cleanup {name} {SUFFIX}")
    table(results)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "cleanup":
        # bench.py cleanup SYSTEM SUFFIX: what a run with BENCH_CLEANUP=0 left behind
        cleanup({"flux": Flux(), "ferry": Ferry()}[sys.argv[2]], f"{sys.argv[2]}-bench-{sys.argv[3]}")
    else:
        main()
