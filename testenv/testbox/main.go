// Command testbox is the only program in the test environment's images for the
// real node (testenv/node-up pushes it as <registry>/ferry-testenv/testbox):
// the pod sandbox ("pause") and a small workload for tests. Static, no libc,
// no shell, so an image holding it is a single small layer built without docker.
//
//	testbox pause                      sleep until SIGTERM/SIGINT, reaping children (the sandbox)
//	testbox say [-exit N] [-stderr] WORDS...   print WORDS (and who/where it runs), exit N
//	testbox serve [-addr :8080] [-say WORDS]   serve /healthz and /readyz, logging each request
//	                                           (so a test can see that the kubelet probed it)
//	testbox kubeget PATH                       GET PATH from the API server the in-cluster way
//	                                           (KUBERNETES_SERVICE_HOST/PORT, the projected
//	                                           ServiceAccount token and CA); prints status and body
//	testbox forward -listen ADDR -to ADDR      TCP forwarder (testenv/node-up: pods reach the
//	                                           API server, which listens on loopback only)
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: testbox pause | say [-exit N] [-stderr] WORDS... | serve [-addr :8080] [-say WORDS]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "say":
		say(os.Args[2:])
	case "serve":
		serve(os.Args[2:])
	case "kubeget":
		kubeget(os.Args[2:])
	case "forward":
		forward(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "testbox: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

// pause is the pod sandbox: PID 1 of a pod with a shared PID namespace must
// reap orphans, and it must exit on the runtime's SIGTERM.
func pause() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sigs {
		if s == syscall.SIGCHLD {
			for {
				var ws syscall.WaitStatus
				pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
			continue
		}
		os.Exit(0)
	}
}

// whoami prints what a test wants to see of the pod it runs in: the uid the
// securityContext gave, the hostname (the pod name) and the in-cluster
// variables and ServiceAccount token the kubelet provides.
func whoami() string {
	_, tokenErr := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token")
	host, _ := os.Hostname()
	return fmt.Sprintf("uid=%d hostname=%s kubernetes_service_host=%s sa_token=%t",
		os.Getuid(), host, os.Getenv("KUBERNETES_SERVICE_HOST"), tokenErr == nil)
}

func say(args []string) {
	fs := flag.NewFlagSet("say", flag.ExitOnError)
	exit := fs.Int("exit", 0, "exit code")
	toStderr := fs.Bool("stderr", false, "print to stderr")
	_ = fs.Parse(args)
	out := os.Stdout
	if *toStderr {
		out = os.Stderr
	}
	fmt.Fprintln(out, strings.Join(fs.Args(), " "))
	fmt.Fprintln(out, whoami())
	os.Exit(*exit)
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	addr := fs.String("addr", ":8080", "listen address")
	words := fs.String("say", "", "printed at start")
	_ = fs.Parse(args)
	if *words != "" {
		fmt.Println(*words)
	}
	fmt.Println(whoami())
	ok := func(w http.ResponseWriter, r *http.Request) {
		// one line per request: "probe GET /readyz kube-probe/1.35"
		fmt.Printf("probe %s %s %s\n", r.Method, r.URL.Path, r.UserAgent())
		_, _ = w.Write([]byte("ok\n"))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", ok)
	mux.HandleFunc("/readyz", ok)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
		<-sigs
		fmt.Println("terminating")
		os.Exit(0)
	}()
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "testbox serve:", err)
		os.Exit(1)
	}
}

// forward copies bytes both ways between each accepted connection and -to;
// TLS passes through untouched (the API server's certificate names 10.96.0.1).
func forward(args []string) {
	fs := flag.NewFlagSet("forward", flag.ExitOnError)
	listen := fs.String("listen", "", "listen address")
	to := fs.String("to", "", "target address")
	_ = fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbox forward:", err)
		os.Exit(1)
	}
	fmt.Printf("forwarding %s to %s\n", *listen, *to)
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, "testbox forward: accept:", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		go func(c net.Conn) {
			defer c.Close()
			t, err := net.DialTimeout("tcp", *to, 5*time.Second)
			if err != nil {
				fmt.Fprintln(os.Stderr, "testbox forward: dial:", err)
				return
			}
			defer t.Close()
			done := make(chan struct{}, 2)
			go func() { _, _ = io.Copy(t, c); done <- struct{}{} }()
			go func() { _, _ = io.Copy(c, t); done <- struct{}{} }()
			<-done
		}(c)
	}
}

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func kubeget(args []string) {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: testbox kubeget PATH")
		os.Exit(2)
	}
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "testbox kubeget: %s: %v\n", what, err)
		os.Exit(1)
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		fail("token", err)
	}
	ca, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		fail("ca.crt", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
	url := "https://" + net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")) + args[0]
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		fail("request", err)
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	if err != nil {
		fail("GET "+url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	fmt.Printf("GET %s: %d\n%s\n", url, resp.StatusCode, body)
	if resp.StatusCode != http.StatusOK {
		os.Exit(1)
	}
}
