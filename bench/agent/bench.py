#!/usr/bin/env python3
"""ferry agent benchmark against the testenv (see RESULTS.md).

1. N Releases x 4 objects (Deployment scaled to 0, ServiceAccount, Service, ConfigMap) from one git
   monorepo: time from agent start (first reconcile) to all Ready, and the agent's peak RSS.
2. Steady state: API requests the agent sends during one Release interval with nothing changed
   (from its ferry_api_requests_total metric; lease renewals excluded: run without election).
3. Commit-to-applied latency with a webhook (generic receiver, bearer token), p50/p99 over 50
   commits, on a separate one-Release repo while the N Releases stay loaded, once the control
   plane has settled (BENCH_SETTLE_S, default 1200; 0 measures at once).

Usage: bench/agent/bench.py [N]   (testenv up; builds nothing: run
       `cargo build --release -p ferry-agent` first)
"""
import json, os, random, shlex, ssl, string, subprocess, sys, tempfile, time, base64, http.client, urllib.request
import concurrent.futures

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
INTERVAL = int(os.environ.get("BENCH_INTERVAL", "60"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
AGENT = os.environ.get("FERRY_AGENT_BIN", os.path.join(ROOT, "target/release/ferry-agent"))
ENV = {}
for line in open("/tmp/ferry-testenv/env"):
    line = line.strip()
    if line.startswith("export ") and "=" in line:
        k, v = line[7:].split("=", 1)
        ENV[k] = v.strip("'\"")
os.environ["KUBECONFIG"] = ENV["KUBECONFIG"]
os.environ["PATH"] = ENV["FERRY_TESTENV_BIN"] + ":" + os.environ["PATH"]
suffix = "".join(random.choice(string.ascii_lowercase) for _ in range(5))
NS = f"ferry-bench-{suffix}"


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


class ReadyWatch:
    """Counts Ready Releases from one watch stream (no resourceVersion: the API server first sends
    every existing Release as ADDED, then changes). A back-to-back `kubectl get -o json` of 10,000
    Releases would load the API server this benchmark measures; one watch costs it nothing."""

    def __init__(self, api_stream, namespace):
        import threading
        self.ready = {}
        self.lock = threading.Lock()
        self.error = None
        self.path = f"/apis/ferry.dev/v1alpha1/namespaces/{namespace}/releases?watch=1&timeoutSeconds=3600"
        self.api_stream = api_stream
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                for event in self.api_stream(self.path):
                    obj = event.get("object", {})
                    name = obj.get("metadata", {}).get("name")
                    if event.get("type") == "ERROR" or not name:
                        continue
                    ok = event["type"] != "DELETED" and any(
                        c.get("type") == "Ready" and c.get("status") == "True"
                        for c in obj.get("status", {}).get("conditions", []))
                    with self.lock:
                        self.ready[name] = ok
            except Exception as err:  # reconnect: the count is rebuilt from the new stream's ADDED events
                self.error = err
                time.sleep(0.5)

    def count(self):
        with self.lock:
            return sum(1 for v in self.ready.values() if v)


def rss_kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def metrics(port):
    # /metrics is on --metrics-addr (the agent's port + 1000 here), not on the webhook port.
    text = urllib.request.urlopen(f"http://127.0.0.1:{port + 1000}/metrics").read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("ferry_api_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            out[labels] = float(value)
    return out


def main():
    sh(f"kubectl apply --server-side --force-conflicts -f {ROOT}/deploy/crds.yaml")
    sh(f"kubectl create namespace {NS}")
    # The Releases live in the agent's own namespace and name no service account: they apply as
    # its `ferry-admin` (what `ferry install` creates), which must reach every target namespace.
    sh(f"kubectl create clusterrolebinding ferry-admin-{NS} --clusterrole=cluster-admin --serviceaccount={NS}:ferry-admin")
    # One target namespace per app: the engine lists each kind per namespace before applying,
    # so a thousand apps in one namespace would make every apply list every app's objects.
    kubectl_apply("".join(f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}-{i:04d}, labels: {{ferry.dev/bench: '{NS}'}}}}\n" for i in range(N)))
    work, push, url = make_repo(NS)
    for i in range(N):
        d = os.path.join(work, "apps", f"app-{i:04d}")
        os.makedirs(d)
        for f, text in app_files(i).items():
            open(os.path.join(d, f), "w").write(text)
    sha = commit(work, push, "monorepo")
    docs = [f"""apiVersion: v1
kind: Secret
metadata: {{name: git-auth, namespace: {NS}}}
stringData: {{username: {ENV['FERRY_GIT_USER']}, password: {ENV['FERRY_GIT_PASSWORD']}}}
---
apiVersion: ferry.dev/v1alpha1
kind: GitSource
metadata: {{name: mono, namespace: {NS}}}
spec: {{url: {url}, ref: {{branch: main}}, interval: 10m, secretRef: {{name: git-auth}}}}
"""]
    for i in range(N):
        docs.append(f"""---
apiVersion: ferry.dev/v1alpha1
kind: Release
metadata: {{name: app-{i:04d}, namespace: {NS}}}
spec: {{sourceRef: {{kind: GitSource, name: mono}}, path: apps/app-{i:04d}, targetNamespace: {NS}-{i:04d}, interval: {INTERVAL}s, prune: true}}
""")
    kubectl_apply("".join(docs))
    port = 19000 + random.randint(0, 900)
    cache = tempfile.mkdtemp()
    log = open(os.path.join(cache, "agent.log"), "w")
    server_before = apiserver_requests()
    server_seconds_before = apiserver_requests("apiserver_request_duration_seconds_sum")
    t0 = time.monotonic()
    agent = subprocess.Popen([AGENT, "--namespace", NS, "--watch-namespace", NS, "--leader-elect", "false",
                              "--http-addr", f"127.0.0.1:{port}", "--metrics-addr", f"127.0.0.1:{port + 1000}", "--cache-dir", cache, "--log-format", "text",
                              # One tenant: no per-namespace fairness cap on the 8 workers.
                              "--max-concurrent-per-namespace", "0"],
                             stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ, RUST_LOG="warn"))
    watch = ReadyWatch(api_stream_getter(), NS)
    ready = 0
    timeout = int(os.environ.get("BENCH_TIMEOUT", "900"))
    next_progress = 30
    while ready < N:
        time.sleep(0.2)
        if agent.poll() is not None:
            sys.exit(f"agent exited: see {cache}/agent.log")
        ready = watch.count()
        elapsed = time.monotonic() - t0
        if elapsed >= next_progress:
            # Progress lines, so that a run stopped early still says how far it got.
            cpu = agent_cpu_s(agent.pid)
            print(f"PROGRESS seconds={elapsed:.0f} ready={ready} rss_mib={rss_kib(agent.pid, 'VmRSS')/1024:.1f} "
                  f"cpu_s={cpu:.1f}", flush=True)
            next_progress += 30
        if elapsed > timeout:
            sys.exit(f"only {ready}/{N} Ready after {timeout} s (BENCH_TIMEOUT)")
    took = time.monotonic() - t0
    peak_startup = rss_kib(agent.pid, "VmHWM")
    print(f"RESULT all_ready releases={N} objects={4*N} seconds={took:.1f} peak_rss_mib={peak_startup/1024:.1f}", flush=True)
    # What the API server served during the sync (every client: agent, controller-manager, ...),
    # by verb and resource, largest first: where the requests per Release go.
    server_after = apiserver_requests()
    served = sorted(((v - server_before.get(k, 0), k) for k, v in server_after.items()), reverse=True)
    print("RESULT apiserver_requests_during_sync " + " ".join(f"{k}={v:.0f}" for v, k in served[:30] if v > 0), flush=True)
    # The seconds the API server spent serving each verb and resource (latency summed, so
    # concurrent requests overlap): which requests its time goes to, WATCH excluded (open streams).
    seconds_after = apiserver_requests("apiserver_request_duration_seconds_sum")
    spent = sorted(((v - server_seconds_before.get(k, 0), k) for k, v in seconds_after.items() if not k.startswith("WATCH")), reverse=True)
    print("RESULT apiserver_seconds_during_sync " + " ".join(f"{k}={v:.1f}" for v, k in spent[:30] if v > 0.05), flush=True)

    # Steady state: one full interval with nothing changed.
    time.sleep(10)
    before = metrics(port)
    time.sleep(INTERVAL + 5)
    after = metrics(port)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    reads = sum(v for k, v in delta.items() if 'operation="read"' in k)
    writes = sum(v for k, v in delta.items() if 'operation="write"' in k)
    print(f"RESULT steady_state interval_s={INTERVAL} reads={reads:.0f} writes={writes:.0f} detail={json.dumps(delta)}", flush=True)

    # Webhook latency on a one-Release repo.
    lwork, lpush, lurl = make_repo(NS + "-latency")
    open(os.path.join(lwork, "cm.yaml"), "w").write("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: latency}\ndata: {value: '0'}\n")
    commit(lwork, lpush, "0")
    kubectl_apply(f"""apiVersion: v1
kind: Secret
metadata: {{name: hook-token, namespace: {NS}}}
stringData: {{token: bench-token}}
---
apiVersion: ferry.dev/v1alpha1
kind: Receiver
metadata: {{name: hook, namespace: {NS}}}
spec: {{type: generic, secretRef: {{name: hook-token}}, resources: [latency]}}
---
apiVersion: ferry.dev/v1alpha1
kind: GitSource
metadata: {{name: latency, namespace: {NS}}}
spec: {{url: {lurl}, ref: {{branch: main}}, interval: 1h, secretRef: {{name: git-auth}}}}
---
apiVersion: ferry.dev/v1alpha1
kind: Release
metadata: {{name: latency, namespace: {NS}}}
spec: {{sourceRef: {{kind: GitSource, name: latency}}, path: ., interval: 1h}}
""")
    api = api_getter()
    while api(f"/api/v1/namespaces/{NS}/configmaps/latency") is None:
        time.sleep(0.2)
    # BENCH_SETTLE_S=0 measures at once, whatever the control plane is still doing.
    settle_limit = int(os.environ.get("BENCH_SETTLE_S", "1200"))
    waited = settle(settle_limit) if settle_limit > 0 else 0.0
    print(f"RESULT settled_before_latency_s={waited:.0f}", flush=True)
    samples = []
    for i in range(1, 51):
        open(os.path.join(lwork, "cm.yaml"), "w").write(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: latency}}\ndata: {{value: '{i}'}}\n")
        commit(lwork, lpush, str(i))
        start = time.monotonic()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/hook/{NS}/hook", data=b"{}", method="POST",
                                     headers={"Authorization": "Bearer bench-token", "Content-Type": "application/json"})
        urllib.request.urlopen(req).read()
        while True:
            cm = api(f"/api/v1/namespaces/{NS}/configmaps/latency")
            if cm and cm.get("data", {}).get("value") == str(i):
                break
            if time.monotonic() - start > 30:
                sys.exit(f"commit {i} not applied within 30 s")
            time.sleep(0.01)
        samples.append(time.monotonic() - start)
    samples.sort()
    p50 = samples[len(samples) // 2]
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"RESULT webhook_latency commits=50 p50_ms={p50*1000:.0f} p99_ms={p99*1000:.0f} max_ms={samples[-1]*1000:.0f}", flush=True)
    print(f"RESULT peak_rss_total_mib={rss_kib(agent.pid, 'VmHWM')/1024:.1f}", flush=True)
    agent.terminate()
    agent.wait(timeout=60)
    # No agent is left to run the Releases' finalizers (they would prune 4000 objects one by
    # one): drop them so the namespaces can go.
    # One PATCH per Release over kept-alive connections (a kubectl process per Release took
    # minutes at 10,000).
    drop_release_finalizers()
    subprocess.run(["kubectl", "delete", "namespace", NS, "--wait=false"], capture_output=True)
    subprocess.run(["kubectl", "delete", "clusterrolebinding", f"ferry-admin-{NS}"], capture_output=True)
    subprocess.run(["kubectl", "delete", "namespace", "-l", f"ferry.dev/bench={NS}", "--wait=false"], capture_output=True)


def drop_release_finalizers():
    """Clears metadata.finalizers of every Release in NS, 8 connections in parallel."""
    ctx, host = tls_context()
    base = f"/apis/ferry.dev/v1alpha1/namespaces/{NS}/releases"
    conn = http.client.HTTPSConnection(host, context=ctx, timeout=60)
    conn.request("GET", base)
    resp = conn.getresponse()
    listed = json.loads(resp.read()) if resp.status == 200 else {"items": []}
    conn.close()
    names = [item["metadata"]["name"] for item in listed["items"]]
    body = json.dumps({"metadata": {"finalizers": None}})

    def worker(chunk):
        conn = http.client.HTTPSConnection(host, context=ctx, timeout=30)
        for name in chunk:
            conn.request("PATCH", f"{base}/{name}", body=body,
                         headers={"Content-Type": "application/merge-patch+json"})
            conn.getresponse().read()
        conn.close()

    chunks = [names[i::8] for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(worker, chunks))


def apiserver_requests(metric="apiserver_request_total"):
    """A counter of the API server's /metrics summed by verb and resource: apiserver_request_total
    (requests served) or apiserver_request_duration_seconds_sum (seconds spent serving them)."""
    out = {}
    for line in sh("kubectl get --raw /metrics").splitlines():
        if not line.startswith(metric + "{"):
            continue
        labels, value = line.rsplit(" ", 1)
        fields = dict(kv.split("=", 1) for kv in labels[len(metric) + 1:-1].split(",") if "=" in kv)
        key = f'{fields.get("verb", "").strip(chr(34))}:{fields.get("resource", "").strip(chr(34))}'
        out[key] = out.get(key, 0) + float(value)
    return out


def control_plane_cpu_s():
    """utime+stime of kube-apiserver, etcd and kube-controller-manager, summed."""
    total = 0.0
    for name in ("kube-apiserver", "etcd", "kube-controller-manager"):
        try:
            total += agent_cpu_s(open(f"/tmp/ferry-testenv/pids/{name}.pid").read().strip())
        except (OSError, ValueError):
            pass
    return total


def settle(limit_s):
    """Wait until the control plane used < 35% of one core over 10 s; return the seconds waited.
    After a sync of thousands of Deployments the controller-manager keeps creating ReplicaSets
    for minutes; a latency measured during that is the controller-manager's backlog, not ferry.
    The bar is not "idle": with 10,000 Releases' 40,000 objects the control plane alone uses ~21%
    of a core at rest (kube-apiserver 10%, etcd 7%, controller-manager 4%, measured 2026-12-03),
    while a backlog keeps it above 100%."""
    start = time.monotonic()
    while time.monotonic() - start < limit_s:
        before = control_plane_cpu_s()
        time.sleep(10)
        if control_plane_cpu_s() - before < 3.5:
            return time.monotonic() - start
    print(f"warning: control plane still busy after {limit_s} s", flush=True)
    return time.monotonic() - start


def agent_cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_stream_getter():
    """A streaming GET (watch) that yields one decoded JSON event per line."""
    ctx, host = tls_context()

    def stream(path):
        conn = http.client.HTTPSConnection(host, context=ctx, timeout=3700)
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"watch {path}: HTTP {resp.status}")
        for line in resp:
            if line.strip():
                yield json.loads(line)
    return stream


def tls_context():
    """TLS context and host:port from the admin kubeconfig's client certificate."""
    kc = json.loads(sh("kubectl config view --raw -o json"))
    cluster = kc["clusters"][0]["cluster"]
    user = kc["users"][0]["user"]
    tmp = tempfile.mkdtemp()
    for key, field in [("ca", "certificate-authority-data"), ("crt", "client-certificate-data"), ("key", "client-key-data")]:
        src = cluster if key == "ca" else user
        open(os.path.join(tmp, key), "wb").write(base64.b64decode(src[field]))
    ctx = ssl.create_default_context(cafile=os.path.join(tmp, "ca"))
    ctx.load_cert_chain(os.path.join(tmp, "crt"), os.path.join(tmp, "key"))
    return ctx, cluster["server"].split("://", 1)[1]


def api_getter():
    """GET against the API server with the admin kubeconfig's client certificate."""
    ctx, host = tls_context()

    def get(path):
        conn = http.client.HTTPSConnection(host, context=ctx, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body) if resp.status == 200 else None
    return get


if __name__ == "__main__":
    main()
