package runpod

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv1"
)

// Launch creates a secure-cloud pod of req.Offer.GPUCount GPUs of type
// req.Offer.InstanceType in data center req.Offer.ProviderRegion,
// interruptible when the offer is spot, with one create call. It does not
// deduplicate: a second Launch of a name is a second pod. A create that ends
// without a definite answer (timeout, transport error, 5xx, unreadable
// answer) is ClassTransient; the pod may exist, and the controller looks for
// it by name.
//
// RunPod has no user-data field: UserData travels base64-encoded in the pod's
// UserDataEnv environment variable, the name in MachineNameEnv.
func (a *Adapter) Launch(ctx context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	const op = "Launch"
	if req.Name == "" || req.Offer.InstanceType == "" || req.Offer.ProviderRegion == "" || req.Offer.GPUCount < 1 {
		return providers.Instance{}, &providers.Error{Provider: providers.RunPod, Operation: op, Class: providers.ClassInvalid,
			Message: "launch needs a name, a GPU type, a data center and a positive GPU count"}
	}
	body := runpodv1.PodCreateInput{
		Name:          new(req.Name),
		GpuTypeIds:    &[]runpodv1.PodCreateInputGpuTypeIds{runpodv1.PodCreateInputGpuTypeIds(req.Offer.InstanceType)},
		GpuCount:      new(req.Offer.GPUCount),
		DataCenterIds: &[]runpodv1.PodCreateInputDataCenterIds{runpodv1.PodCreateInputDataCenterIds(req.Offer.ProviderRegion)},
		Interruptible: new(req.Offer.Capacity == providers.Spot),
		CloudType:     new(runpodv1.SECURE),
		ImageName:     new(a.cfg.ImageName),
		Env: &map[string]any{
			UserDataEnv:    base64.StdEncoding.EncodeToString([]byte(req.UserData)),
			MachineNameEnv: req.Name,
		},
	}
	resp, err := a.calls.CallLaunch(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.v1.CreatePod(ctx, body)
	})
	if err != nil {
		return providers.Instance{}, err
	}
	var pod runpodv1.Pod
	if err := json.Unmarshal(resp, &pod); err != nil || pod.Id == nil || *pod.Id == "" {
		// RunPod said 2xx, so a pod probably exists: transient, ambiguous.
		return providers.Instance{}, a.calls.Wrap(op, fmt.Errorf("create answered without a usable pod (decode error: %v)", err))
	}
	return NormalizePod(pod), nil
}

// Instances lists the operator's pods (names with providers.MachineNamePrefix)
// in one call.
func (a *Adapter) Instances(ctx context.Context) ([]providers.Instance, error) {
	pods, err := a.listPods(ctx, "Instances", &runpodv1.ListPodsParams{IncludeMachine: new(true)})
	if err != nil {
		return nil, err
	}
	out := make([]providers.Instance, 0, len(pods))
	for _, p := range pods {
		if p.Name != nil && providers.IsOperatorMachine(*p.Name) {
			out = append(out, NormalizePod(p))
		}
	}
	return out, nil
}

func (a *Adapter) listPods(ctx context.Context, op string, params *runpodv1.ListPodsParams) (runpodv1.Pods, error) {
	body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.v1.ListPods(ctx, params)
	})
	if err != nil {
		return nil, err
	}
	var pods runpodv1.Pods
	if err := json.Unmarshal(body, &pods); err != nil {
		return nil, a.calls.Wrap(op, fmt.Errorf("decoding pods: %w", err))
	}
	return pods, nil
}

// Instance reads one pod by id; a missing pod is ClassNotFound.
func (a *Adapter) Instance(ctx context.Context, id string) (providers.Instance, error) {
	const op = "Instance"
	body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.v1.GetPod(ctx, id, &runpodv1.GetPodParams{IncludeMachine: new(true)})
	})
	if err != nil {
		return providers.Instance{}, err
	}
	var pod runpodv1.Pod
	if err := json.Unmarshal(body, &pod); err != nil {
		return providers.Instance{}, a.calls.Wrap(op, fmt.Errorf("decoding pod: %w", err))
	}
	return NormalizePod(pod), nil
}

// Terminate deletes a pod. A pod that is already gone (404) is success.
func (a *Adapter) Terminate(ctx context.Context, id string) error {
	const op = "Terminate"
	if id == "" {
		return &providers.Error{Provider: providers.RunPod, Operation: op, Class: providers.ClassInvalid, Message: "no pod id"}
	}
	_, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.v1.DeletePod(ctx, id)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// NormalizePod maps a REST v1 pod onto providers.Instance. States:
//   - RUNNING without a public IP: booting (RunPod leaves publicIp empty
//     while the pod initializes); RUNNING with one: running;
//   - EXITED: interrupted for an interruptible (spot) pod, which is how RunPod
//     takes spot capacity back (the pod is stopped, not deleted, and still
//     bills its disk until terminated); failed otherwise;
//   - TERMINATED: terminated;
//   - anything else (or nothing): pending.
func NormalizePod(p runpodv1.Pod) providers.Instance {
	inst := providers.Instance{
		Provider: providers.RunPod,
		ID:       deref(p.Id),
		Name:     deref(p.Name),
		Spot:     p.Interruptible != nil && *p.Interruptible,
		PublicIP: deref(p.PublicIp),
	}
	if p.Gpu != nil {
		inst.InstanceType = deref(p.Gpu.Id)
	}
	if p.Machine != nil {
		if inst.InstanceType == "" {
			inst.InstanceType = deref(p.Machine.GpuTypeId)
		}
		inst.ProviderRegion = deref(p.Machine.DataCenterId)
	}
	if p.DesiredStatus != nil {
		inst.NativeState = string(*p.DesiredStatus)
	}
	switch inst.NativeState {
	case string(runpodv1.PodDesiredStatusRUNNING):
		inst.State = providers.StateBooting
		if inst.PublicIP != "" {
			inst.State = providers.StateRunning
		}
	case string(runpodv1.PodDesiredStatusEXITED):
		inst.State = providers.StateFailed
		if inst.Spot {
			inst.State = providers.StateInterrupted
		}
	case string(runpodv1.PodDesiredStatusTERMINATED):
		inst.State = providers.StateTerminated
	default:
		inst.State = providers.StatePending
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
