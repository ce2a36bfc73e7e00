// Command floor is the apply floor of bench/apply (issue 17, part 4): the least a client
// can do to put the same objects into a cluster the way ferry does. It reads every YAML
// document under DIR, then sends one server-side apply PATCH per object, exactly as
// crates/ferry-engine's cluster/manager/apply.rs does (fieldManager=ferry, force=true,
// fieldValidation=Ignore, response as PartialObjectMetadata), with -c requests in flight
// and nothing else: no discovery (a fixed kind table), no reads, no inventory, no health.
// Transport, TLS and credentials come from client-go (KUBECONFIG).
//
// Usage: floor -n NAMESPACE [-c 64] DIR     prints {"objects":N,"requests":{"reads":0,"writes":N}}
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// The kinds bench/apply/gen.sh writes: apiVersion/kind -> (URL prefix, resource, namespaced).
// A fixed table instead of discovery: the floor sends nothing but the applies.
var kinds = map[string]struct {
	prefix, resource string
}{
	"v1/ConfigMap":       {"/api/v1", "configmaps"},
	"v1/Service":         {"/api/v1", "services"},
	"v1/ServiceAccount":  {"/api/v1", "serviceaccounts"},
	"v1/Secret":          {"/api/v1", "secrets"},
	"apps/v1/Deployment": {"/apis/apps/v1", "deployments"},
}

// The Accept header ferry sends with each apply (ACCEPT_METADATA_ONLY in apply.rs).
const acceptMetadataOnly = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"

type object struct {
	path string // URL path of the object
	body []byte // JSON
	name string // for errors: file and kind/name
}

func load(dir, namespace string) ([]object, error) {
	var out []object
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		r := utilyaml.NewYAMLReader(bufio.NewReader(f))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			js, err := yaml.YAMLToJSON(doc)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			var m map[string]any
			if err := json.Unmarshal(js, &m); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			if m == nil {
				continue
			}
			av, _ := m["apiVersion"].(string)
			kind, _ := m["kind"].(string)
			meta, _ := m["metadata"].(map[string]any)
			if meta == nil {
				return fmt.Errorf("%s: a %s without metadata", p, kind)
			}
			name, _ := meta["name"].(string)
			k, ok := kinds[av+"/"+kind]
			if !ok {
				return fmt.Errorf("%s: %s %s/%s is not in the floor's kind table (bench/floor/main.go)", p, name, av, kind)
			}
			meta["namespace"] = namespace
			body, err := json.Marshal(m)
			if err != nil {
				return err
			}
			out = append(out, object{
				path: fmt.Sprintf("%s/namespaces/%s/%s/%s", k.prefix, namespace, k.resource, url.PathEscape(name)),
				body: body,
				name: fmt.Sprintf("%s: %s/%s", p, kind, name),
			})
		}
	})
	return out, err
}

func main() {
	namespace := flag.String("n", "", "target namespace (required)")
	concurrency := flag.Int("c", 64, "requests in flight")
	flag.Parse()
	if *namespace == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: floor -n NAMESPACE [-c 64] DIR")
		os.Exit(2)
	}
	objects, err := load(flag.Arg(0), *namespace)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), nil).ClientConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor: kubeconfig:", err)
		os.Exit(1)
	}
	// The HTTP client alone (client-go's transport: TLS, auth, HTTP/2): no rate limiter, no
	// retries, no decoding beyond what is needed to see the status.
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "floor: client:", err)
		os.Exit(1)
	}
	host := strings.TrimSuffix(cfg.Host, "/")
	query := "?fieldManager=ferry&force=true&fieldValidation=Ignore"

	ctx := context.Background()
	work := make(chan object)
	var failed atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for i := 0; i < *concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range work {
				if err := apply(ctx, httpClient, host+o.path+query, o.body); err != nil {
					failed.Add(1)
					firstErr.Do(func() { fmt.Fprintf(os.Stderr, "floor: %s: %v\n", o.name, err) })
				}
			}
		}()
	}
	for _, o := range objects {
		work <- o
	}
	close(work)
	wg.Wait()
	fmt.Printf("{\"objects\":%d,\"failed\":%d,\"requests\":{\"reads\":0,\"writes\":%d}}\n", len(objects), failed.Load(), len(objects))
	if failed.Load() > 0 {
		os.Exit(1)
	}
}

func apply(ctx context.Context, c *http.Client, u string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/apply-patch+yaml")
	req.Header.Set("Accept", acceptMetadataOnly)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return nil
}
