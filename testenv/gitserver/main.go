// Command gitserver serves the bare repositories under a project root over
// git's smart HTTP protocol (git http-backend through CGI) behind HTTP basic
// auth. Intended for tests only: it listens on loopback by default.
//
// Repositories are plain bare repos under -root, e.g.
//
//	git init --bare "$FERRY_GIT_ROOT/team/app.git"
//
// and are reachable as http://USER:PASS@127.0.0.1:13000/team/app.git.
// POST /_create?repo=team/app.git (authenticated) creates one as well.
//
// "gitserver htpasswd USER PASSWORD" prints a bcrypt htpasswd line.
package main

import (
	"bytes"
	"crypto/subtle"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

func main() {
	// "gitserver htpasswd USER PASSWORD" prints a bcrypt htpasswd line (for the
	// OCI registry's htpasswd auth) and exits.
	if len(os.Args) == 4 && os.Args[1] == "htpasswd" {
		h, err := bcrypt.GenerateFromPassword([]byte(os.Args[3]), bcrypt.DefaultCost)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s:%s\n", os.Args[2], h)
		return
	}
	listen := flag.String("listen", envOr("GITSERVER_LISTEN", "127.0.0.1:13000"), "listen address")
	root := flag.String("root", envOr("GITSERVER_ROOT", ""), "directory holding the bare repositories (GIT_PROJECT_ROOT)")
	user := flag.String("user", envOr("GITSERVER_USER", "ferry"), "basic auth user")
	pass := flag.String("password", envOr("GITSERVER_PASSWORD", ""), "basic auth password (required; or GITSERVER_PASSWORD)")
	anonRead := flag.Bool("anonymous-read", envOr("GITSERVER_ANONYMOUS_READ", "") == "true", "allow unauthenticated fetch/clone")
	gitBin := flag.String("git", envOr("GITSERVER_GIT", "git"), "git executable")
	flag.Parse()

	if *root == "" || *pass == "" {
		log.Fatal("gitserver: -root and -password (or GITSERVER_ROOT, GITSERVER_PASSWORD) are required")
	}
	absRoot, err := filepath.Abs(*root)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(absRoot, 0o755); err != nil {
		log.Fatal(err)
	}
	gitPath, err := exec.LookPath(*gitBin)
	if err != nil {
		log.Fatalf("gitserver: git not found: %v", err)
	}
	out, err := exec.Command(gitPath, "--exec-path").Output()
	if err != nil {
		log.Fatalf("gitserver: git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")

	cgiHandler := &cgi.Handler{
		Path: backend,
		Root: "/",
		Env: []string{
			"GIT_PROJECT_ROOT=" + absRoot,
			"GIT_HTTP_EXPORT_ALL=1",
			"GIT_HTTP_MAX_REQUEST_BUFFER=100M",
		},
		InheritEnv: []string{"PATH", "HOME"},
	}

	authOK := func(r *http.Request) bool {
		u, p, ok := r.BasicAuth()
		if !ok {
			return false
		}
		uo := subtle.ConstantTimeCompare([]byte(u), []byte(*user))
		po := subtle.ConstantTimeCompare([]byte(p), []byte(*pass))
		return uo&po == 1
	}
	isWrite := func(r *http.Request) bool {
		return r.URL.Query().Get("service") == "git-receive-pack" ||
			strings.HasSuffix(r.URL.Path, "/git-receive-pack")
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/_health", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/_create", func(w http.ResponseWriter, r *http.Request) {
		if !authOK(r) {
			challenge(w)
			return
		}
		if r.Method != http.MethodPost {
			http.Error(w, "POST required", http.StatusMethodNotAllowed)
			return
		}
		name := path.Clean("/" + r.URL.Query().Get("repo"))
		if name == "/" || strings.Contains(name, "..") {
			http.Error(w, "bad repo name", http.StatusBadRequest)
			return
		}
		if !strings.HasSuffix(name, ".git") {
			name += ".git"
		}
		dir := filepath.Join(absRoot, filepath.FromSlash(name))
		cmd := exec.Command(gitPath, "init", "--bare", "--initial-branch=main", dir)
		if b, err := cmd.CombinedOutput(); err != nil {
			http.Error(w, fmt.Sprintf("git init: %v: %s", err, b), http.StatusInternalServerError)
			return
		}
		// allow pushes over http without extra config
		_ = exec.Command(gitPath, "-C", dir, "config", "http.receivepack", "true").Run()
		fmt.Fprintln(w, strings.TrimPrefix(name, "/"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !authOK(r) && (isWrite(r) || !*anonRead) {
			challenge(w)
			return
		}
		// Go's CGI handler refuses chunked request bodies (400), and libgit2 always sends
		// receive-pack requests chunked: buffer them so git2-based pushes work as they do
		// against GitHub, GitLab or Gitea.
		if r.ContentLength < 0 && r.Body != nil {
			body, err := io.ReadAll(io.LimitReader(r.Body, 100<<20))
			if err != nil {
				http.Error(w, "reading request body: "+err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.TransferEncoding = nil
		}
		h := *cgiHandler
		// git-http-backend enables receive-pack only for an authenticated
		// REMOTE_USER (or a repo with http.receivepack=true).
		if u, _, ok := r.BasicAuth(); ok && authOK(r) {
			h.Env = append(append([]string{}, cgiHandler.Env...), "REMOTE_USER="+u)
		}
		h.ServeHTTP(w, r)
	})

	log.Printf("gitserver: serving %s on http://%s (user %q, anonymous read %v)", absRoot, *listen, *user, *anonRead)
	log.Fatal(http.ListenAndServe(*listen, logRequests(mux)))
}

func challenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="ferry-testenv-git"`)
	http.Error(w, "authentication required", http.StatusUnauthorized)
}

func envOr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(c int) { s.code = c; s.ResponseWriter.WriteHeader(c) }

func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: 200}
		h.ServeHTTP(rec, r)
		log.Printf("%s %s %d", r.Method, r.URL.RequestURI(), rec.code)
	})
}
