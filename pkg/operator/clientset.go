package operator

import (
	"fmt"

	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	policyv1client "k8s.io/client-go/kubernetes/typed/policy/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/solanyn/gpu-operator/pkg/controller"
)

// Clientset is the part of k8s.io/client-go/kubernetes' Clientset the
// operator uses: core (Nodes, Pods, Secrets, ConfigMaps, Events), policy
// (Evictions) and coordination (the leader Lease). The full clientset holds
// a typed client of every API group, and linking them all was most of the
// operator's binary; tests use the fake clientset, which has the same
// methods.
type Clientset struct {
	core         *corev1client.CoreV1Client
	policy       *policyv1client.PolicyV1Client
	coordination *coordinationv1client.CoordinationV1Client
}

var _ controller.KubeClient = (*Clientset)(nil)

// NewClientset is kubernetes.NewForConfig for the three groups: the clients
// share one HTTP client and one rate limiter (from c.QPS and c.Burst unless
// c.RateLimiter is set), and the user agent defaults to client-go's.
func NewClientset(c *rest.Config) (*Clientset, error) {
	cfg := *c
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	httpClient, err := rest.HTTPClientFor(&cfg)
	if err != nil {
		return nil, err
	}
	if cfg.RateLimiter == nil && cfg.QPS > 0 {
		if cfg.Burst <= 0 {
			return nil, fmt.Errorf("burst is required to be greater than 0 when RateLimiter is not set and QPS is set to greater than 0")
		}
		cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	}
	var cs Clientset
	if cs.core, err = corev1client.NewForConfigAndClient(&cfg, httpClient); err != nil {
		return nil, err
	}
	if cs.policy, err = policyv1client.NewForConfigAndClient(&cfg, httpClient); err != nil {
		return nil, err
	}
	if cs.coordination, err = coordinationv1client.NewForConfigAndClient(&cfg, httpClient); err != nil {
		return nil, err
	}
	return &cs, nil
}

// CoreV1 is the core/v1 client.
func (c *Clientset) CoreV1() corev1client.CoreV1Interface { return c.core }

// PolicyV1 is the policy/v1 client.
func (c *Clientset) PolicyV1() policyv1client.PolicyV1Interface { return c.policy }

// CoordinationV1 is the coordination.k8s.io/v1 client.
func (c *Clientset) CoordinationV1() coordinationv1client.CoordinationV1Interface {
	return c.coordination
}
