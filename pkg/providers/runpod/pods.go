package runpod

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// Launch creates one pod with one POST /v2/pods (createPod): the container
// of req.Container on req.Offer.GPUCount GPUs of type req.Offer.InstanceType
// in data center req.Offer.ProviderRegion, in the adapter's cloud, named
// req.Name. The body (CreatePodRequest) is
//
//	{"name": req.Name, "image": ..., "args": "...", "env": {...},
//	 "ports": ["8888/http", "22/tcp"], "gpu": {"id": ..., "count": n},
//	 "cloud": "SECURE"|"COMMUNITY", "dataCenterIds": [offer.ProviderRegion]}
//
// with args, env and ports left out when there are none. req.UserData and
// req.Tags are not sent: a pod runs its image, and RunPod has no tags.
//
// It does not deduplicate: a second Launch of a name is a second pod. A
// Launch without a Container, or with one RunPod cannot take, is
// ClassInvalid and sends nothing. A create that ends without a definite
// answer (timeout, transport error, 5xx, unreadable answer) is
// ClassTransient: the pod may exist (RunPod has answered 500 after creating
// it), and the controller looks for it by name.
func (a *Adapter) Launch(ctx context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	const op = "Launch"
	body, err := a.createBody(req)
	if err != nil {
		return providers.Instance{}, &providers.Error{Provider: providers.RunPod, Operation: op, Class: providers.ClassInvalid, Message: err.Error()}
	}
	resp, err := a.calls.CallLaunch(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.CreatePod(ctx, body)
	})
	if err != nil {
		return providers.Instance{}, err
	}
	var pod runpodv2.Pod
	if err := json.Unmarshal(resp, &pod); err != nil || pod.Id == "" {
		// RunPod said 2xx, so a pod probably exists: transient, ambiguous.
		return providers.Instance{}, a.calls.Wrap(op, fmt.Errorf("create answered without a usable pod (decode error: %v)", err))
	}
	return NormalizePod(pod), nil
}

// createBody is the createPod body of req, or why RunPod cannot run it.
func (a *Adapter) createBody(req providers.LaunchRequest) (runpodv2.CreatePodRequest, error) {
	c := req.Container
	switch {
	case c == nil:
		return runpodv2.CreatePodRequest{}, fmt.Errorf("RunPod runs containers only: the launch has no container (a pod cannot run a kubelet or user data)")
	case req.Name == "" || req.Offer.InstanceType == "" || req.Offer.ProviderRegion == "" || req.Offer.GPUCount < 1:
		return runpodv2.CreatePodRequest{}, fmt.Errorf("launch needs a name, a GPU type, a data center and a positive GPU count")
	case strings.TrimSpace(c.Image) == "":
		return runpodv2.CreatePodRequest{}, fmt.Errorf("the container has no image")
	}
	body := runpodv2.CreatePodRequest{
		Name:          req.Name,
		Image:         new(c.Image),
		Gpu:           &runpodv2.CreateGpuConfig{Id: req.Offer.InstanceType, Count: new(req.Offer.GPUCount)},
		Cloud:         new(runpodv2.Cloud(a.cfg.Cloud)),
		DataCenterIds: &[]string{req.Offer.ProviderRegion},
	}
	if len(c.Env) > 0 {
		env := make(map[string]string, len(c.Env))
		for k, v := range c.Env {
			if k == "" {
				return runpodv2.CreatePodRequest{}, fmt.Errorf("the container has an environment variable without a name")
			}
			env[k] = v
		}
		body.Env = &env
	}
	if len(c.Args) > 0 {
		body.Args = new(JoinArgs(c.Args))
	}
	if len(c.Ports) > 0 {
		ports, err := formatPorts(c.Ports)
		if err != nil {
			return runpodv2.CreatePodRequest{}, err
		}
		body.Ports = &ports
	}
	return body, nil
}

// JoinArgs joins a container's argument list into the one string REST v2
// takes as "args" ("Arguments passed to the container entrypoint": a string
// in v2, where v1's dockerStartCmd was an array).
//
// The spec does not say how RunPod splits that string. Its users pass shell
// words, such as "bash -c 'echo $X | base64 -d | bash'", and rely on the
// single quotes grouping, so RunPod is taken to split it as a POSIX shell
// does (an assumption, not a documented fact). Each argument is therefore
// written as one shell word: bare when it is made only of characters no shell
// treats specially (letters, digits and @%+=:,./_-), otherwise in single
// quotes, with a ' inside written as '\”. No variable, glob or command
// substitution survives: "$HOME" reaches the entrypoint as the five
// characters $HOME, as in a Kubernetes container's args. An empty argument
// is ”.
func JoinArgs(args []string) string {
	words := make([]string, len(args))
	for i, a := range args {
		words[i] = shellWord(a)
	}
	return strings.Join(words, " ")
}

func shellWord(s string) string {
	if s == "" {
		return "''"
	}
	if strings.IndexFunc(s, func(r rune) bool { return !safeRune(r) }) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func safeRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)
}

// formatPorts writes ports as REST v2's "port/protocol" strings ("8888/http",
// "22/tcp"), refusing what RunPod cannot expose.
func formatPorts(ports []providers.Port) ([]string, error) {
	out := make([]string, 0, len(ports))
	for _, p := range ports {
		proto := strings.ToLower(p.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		if p.Port < 1 || p.Port > 65535 || (proto != "http" && proto != "tcp") {
			return nil, fmt.Errorf("port %d/%s: RunPod exposes ports 1-65535 over http or tcp", p.Port, p.Protocol)
		}
		s := strconv.Itoa(p.Port) + "/" + proto
		if slices.Contains(out, s) {
			return nil, fmt.Errorf("port %s is listed twice", s)
		}
		out = append(out, s)
	}
	return out, nil
}

// Instances lists the operator's pods (names with providers.MachineNamePrefix)
// with one GET /v2/pods (listPods), whose answer is wrapped: {"pods": [...]}.
// Cluster member pods are not asked for (the operator creates none, and the
// pod endpoints cannot delete them).
func (a *Adapter) Instances(ctx context.Context) ([]providers.Instance, error) {
	const op = "Instances"
	body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.ListPods(ctx, &runpodv2.ListPodsParams{})
	})
	if err != nil {
		return nil, err
	}
	var resp runpodv2.ListPodsResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, a.calls.Wrap(op, fmt.Errorf("decoding pods: %w", err))
	}
	out := make([]providers.Instance, 0, len(resp.Pods))
	for _, p := range resp.Pods {
		if providers.IsOperatorMachine(p.Name) {
			out = append(out, NormalizePod(p))
		}
	}
	return out, nil
}

// Instance reads one pod with GET /v2/pods/{id} (getPod); a missing pod is
// ClassNotFound.
func (a *Adapter) Instance(ctx context.Context, id string) (providers.Instance, error) {
	const op = "Instance"
	body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.GetPod(ctx, id)
	})
	if err != nil {
		return providers.Instance{}, err
	}
	var pod runpodv2.Pod
	if err := json.Unmarshal(body, &pod); err != nil {
		return providers.Instance{}, a.calls.Wrap(op, fmt.Errorf("decoding pod: %w", err))
	}
	return NormalizePod(pod), nil
}

// Terminate deletes a pod with DELETE /v2/pods/{id} (deletePod: "permanently
// terminates and deletes a pod", 204; podAction's terminate is documented as
// its equivalent). A pod that is already gone (404) is success, whatever the
// body says.
func (a *Adapter) Terminate(ctx context.Context, id string) error {
	const op = "Terminate"
	if id == "" {
		return &providers.Error{Provider: providers.RunPod, Operation: op, Class: providers.ClassInvalid, Message: "no pod id"}
	}
	_, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.DeletePod(ctx, id)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// NormalizePod maps a REST v2 pod onto providers.Instance. States
// (PodStatus):
//   - PROVISIONING ("pod is being allocated"): pending;
//   - STARTING ("container is starting"): booting;
//   - RUNNING ("container is healthy"): running;
//   - EXITED ("container exited (stopped)"): interrupted. The operator never
//     stops a pod, so someone or something else did (RunPod, the account's
//     balance, a user): the compute is released, the container's process
//     and its ephemeral disk are gone, and a stopped pod still bills its
//     storage until it is deleted. Waiting cannot bring the workload back
//     (a start may not even find its host's GPUs free), so it is an
//     interruption: the controller terminates it and launches anew;
//   - ERROR ("unrecoverable error state"): failed;
//   - TERMINATED ("permanently deleted"): terminated;
//   - anything else: pending.
//
// PublicIP is the first public IP among the runtime port mappings, and Ports
// are those mappings (runtime.ports: private port, type, public IP and
// port); RunPod fills them in only while the pod runs. Spot is always false.
func NormalizePod(p runpodv2.Pod) providers.Instance {
	inst := providers.Instance{
		Provider:    providers.RunPod,
		ID:          p.Id,
		Name:        p.Name,
		NativeState: string(p.Status),
	}
	if p.Gpu != nil {
		inst.InstanceType = p.Gpu.Id
	}
	if p.DataCenterId != nil {
		inst.ProviderRegion = *p.DataCenterId
	}
	switch p.Status {
	case runpodv2.PROVISIONING:
		inst.State = providers.StatePending
	case runpodv2.STARTING:
		inst.State = providers.StateBooting
	case runpodv2.RUNNING:
		inst.State = providers.StateRunning
	case runpodv2.EXITED:
		inst.State = providers.StateInterrupted
	case runpodv2.ERROR:
		inst.State = providers.StateFailed
	case runpodv2.TERMINATED:
		inst.State = providers.StateTerminated
	default:
		inst.State = providers.StatePending
	}
	if p.Runtime.Ports != nil {
		for _, rp := range *p.Runtime.Ports {
			if rp.Private == nil || *rp.Private < 1 {
				continue
			}
			m := providers.PortMapping{Port: *rp.Private, Protocol: deref(rp.Type), PublicIP: deref(rp.Ip)}
			if rp.Public != nil && *rp.Public > 0 {
				m.PublicPort = *rp.Public
			}
			if inst.PublicIP == "" && m.PublicIP != "" {
				inst.PublicIP = m.PublicIP
			}
			inst.Ports = append(inst.Ports, m)
		}
	}
	return inst
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
