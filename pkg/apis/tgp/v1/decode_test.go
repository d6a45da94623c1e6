package v1_test

import (
	"bytes"
	"context"
	stdjson "encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/scheme"
	"github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions"
)

// storedItems are two GPURequests as an API server would serve them from
// etcd: one good, and one stored before the admission rules existed, with
// durations Go cannot parse and a label that is not a label.
var storedItems = []string{
	`{"kind":"GPURequest","apiVersion":"tgp.solanyn.com/v1",
	  "metadata":{"name":"good","namespace":"default","uid":"u-good","resourceVersion":"5"},
	  "spec":{"gpuType":"A100","gpuCount":1,"regionPolicy":"Ordered","maxLifetime":"8h","idleTimeout":"30m","nodeLabels":{"workload":"inference"}}}`,
	`{"kind":"GPURequest","apiVersion":"tgp.solanyn.com/v1",
	  "metadata":{"name":"stored-before-the-rules","namespace":"default","uid":"u-bad","resourceVersion":"7"},
	  "spec":{"gpuType":"A100","gpuCount":1,"regionPolicy":"Ordered","maxLifetime":"1d","idleTimeout":"banana","nodeLabels":{"bad key":"a\nb"}}}`,
}

const listResourceVersion = "10"

func storedList() string {
	return `{"kind":"GPURequestList","apiVersion":"tgp.solanyn.com/v1","metadata":{"resourceVersion":"` + listResourceVersion + `"},"items":[` +
		strings.Join(storedItems, ",") + `]}`
}

// fakeGPURequestServer answers the generated clientset's LIST and WATCH of
// gpurequests in all namespaces with storedItems. With watchList it serves
// them as a streaming list (a WATCH with sendInitialEvents=true: ADDED
// events, then the bookmark that ends them), as a 1.37 API server does and
// as client-go's reflector asks first; without it, it refuses that request
// as an older server would, and the reflector falls back to LIST, then
// WATCH. It records which requests it served.
type fakeGPURequestServer struct {
	watchList bool

	mu   sync.Mutex
	seen []string
}

func (s *fakeGPURequestServer) record(kind string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = append(s.seen, kind)
}

func (s *fakeGPURequestServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

func (s *fakeGPURequestServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != "/apis/tgp.solanyn.com/v1/gpurequests" {
		http.NotFound(w, r)
		return
	}
	q := r.URL.Query()
	w.Header().Set("Content-Type", "application/json")
	if q.Get("watch") != "true" && q.Get("watch") != "1" {
		s.record("LIST")
		fmt.Fprint(w, storedList())
		return
	}
	if q.Get("sendInitialEvents") == "true" {
		if !s.watchList {
			s.record("WATCHLIST refused")
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"BadRequest","code":400,"message":"sendInitialEvents is not supported"}`)
			return
		}
		s.record("WATCHLIST")
		for _, item := range storedItems {
			var compact bytes.Buffer
			if err := stdjson.Compact(&compact, []byte(item)); err != nil {
				panic(err)
			}
			fmt.Fprintf(w, `{"type":"ADDED","object":%s}`+"\n", compact.String())
		}
		fmt.Fprint(w, `{"type":"BOOKMARK","object":{"kind":"GPURequest","apiVersion":"tgp.solanyn.com/v1","metadata":{"resourceVersion":"`+
			listResourceVersion+`","annotations":{"k8s.io/initial-events-end":"true"}}}}`+"\n")
	} else {
		s.record("WATCH")
	}
	w.(http.Flusher).Flush()
	<-r.Context().Done() // nothing changes; the client hangs up when it stops
}

// TestStoredObjectThatFailsValidationDoesNotStopInformers checks the
// design's "a stored object that slipped past validation still never stops
// the operator's informers from decoding the rest" through the generated
// clientset, shared informer and lister, against an HTTP server that serves
// what etcd would hold (a real API server cannot be made to store it).
//
// The previous API typed maxLifetime and idleTimeout as *metav1.Duration,
// whose UnmarshalJSON calls time.ParseDuration: the one "1d" made decoding
// the whole GPURequestList fail (`time: unknown unit "d" in duration "1d"`;
// "banana" gives `time: invalid duration "banana"`), the reflector
// retried the LIST forever and HasSynced never became true, so the
// controller never started for any request (the "metav1.Duration" sub-test
// shows that decoding). Duration is now a string kept as written, and
// ValidateSpec reports the bad object on its own.
func TestStoredObjectThatFailsValidationDoesNotStopInformers(t *testing.T) {
	t.Run("metav1.Duration, the previous type, fails the whole list", func(t *testing.T) {
		type specBefore struct {
			GPUType     string            `json:"gpuType"`
			MaxLifetime *metav1.Duration  `json:"maxLifetime,omitempty"`
			IdleTimeout *metav1.Duration  `json:"idleTimeout,omitempty"`
			NodeLabels  map[string]string `json:"nodeLabels,omitempty"`
		}
		var before struct {
			Items []struct {
				Spec specBefore `json:"spec"`
			} `json:"items"`
		}
		err := json.Unmarshal([]byte(storedList()), &before)
		if want := `time: unknown unit "d" in duration "1d"`; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("decoding the list with metav1.Duration: got %v, want %s", err, want)
		}
		var one specBefore
		err = json.Unmarshal([]byte(`{"gpuType":"A100","idleTimeout":"banana"}`), &one)
		if want := `time: invalid duration "banana"`; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("decoding idleTimeout banana with metav1.Duration: got %v, want %s", err, want)
		}

		obj, err := runtime.Decode(scheme.Codecs.UniversalDeserializer(), []byte(storedList()))
		if err != nil {
			t.Fatalf("decoding with the current types: %v", err)
		}
		if list, ok := obj.(*tgpv1.GPURequestList); !ok || len(list.Items) != 2 {
			t.Fatalf("decoded %T %+v, want a GPURequestList of 2", obj, obj)
		}
	})

	for _, tc := range []struct {
		name      string
		watchList bool
		want      []string
	}{
		{"LIST then WATCH", false, []string{"WATCHLIST refused", "LIST", "WATCH"}},
		{"streaming list", true, []string{"WATCHLIST"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeGPURequestServer{watchList: tc.watchList}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			client, err := versioned.NewForConfig(&rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}

			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			factory := externalversions.NewSharedInformerFactory(client, 0)
			informer := factory.Tgp().V1().GPURequests()
			synced := informer.Informer().HasSynced
			factory.Start(ctx.Done())
			defer func() {
				cancel()
				factory.Shutdown()
			}()
			if !cache.WaitForCacheSync(ctx.Done(), synced) {
				t.Fatalf("informer did not sync; the server saw %v", fake.requests())
			}

			got, err := informer.Lister().List(labels.Everything())
			if err != nil || len(got) != 2 {
				t.Fatalf("lister: %d items, %v; want both", len(got), err)
			}
			good, err := informer.Lister().GPURequests("default").Get("good")
			if err != nil {
				t.Fatal(err)
			}
			if errs := tgpv1.ValidateSpec(&good.Spec, field.NewPath("spec")); len(errs) > 0 {
				t.Errorf("good: %v", errs.ToAggregate())
			}
			bad, err := informer.Lister().GPURequests("default").Get("stored-before-the-rules")
			if err != nil {
				t.Fatal(err)
			}
			if *bad.Spec.MaxLifetime != "1d" || *bad.Spec.IdleTimeout != "banana" || bad.Spec.NodeLabels["bad key"] != "a\nb" {
				t.Errorf("stored values not kept as written: %+v", bad.Spec)
			}
			errs := tgpv1.ValidateSpec(&bad.Spec, field.NewPath("spec"))
			named := map[string]bool{}
			for _, e := range errs {
				named[e.Field] = true
			}
			for _, f := range []string{"spec.maxLifetime", "spec.idleTimeout", "spec.nodeLabels[bad key]"} {
				if !named[f] {
					t.Errorf("ValidateSpec does not name %s: %v", f, errs.ToAggregate())
				}
			}

			// The WATCH after a LIST may still be on its way when the cache
			// has synced: wait for it.
			var seen []string
			err = wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) {
				seen = fake.requests()
				return len(seen) >= len(tc.want), nil
			})
			if err != nil || strings.Join(seen[:len(tc.want)], ",") != strings.Join(tc.want, ",") {
				t.Errorf("server saw %v, want it to begin with %v", seen, tc.want)
			}
		})
	}
}
