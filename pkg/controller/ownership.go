package controller

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Status is a record, not an authority: tenants may write the status
// subresource of their own GPURequests, so nothing in it is trusted to name
// a Node or an instance. The operator acts on a machine only after proving
// it belongs to the request:
//
//   - A machine name is the request's only if it starts with the prefix
//     derived from the request's UID (machinePrefix). A name from status that
//     does not is ignored.
//   - An instance is the request's only if the provider's own listing (the
//     Inventory) records it under such a name. Instance ids in status are
//     never passed to a provider.
//   - A Node is the request's only if it carries the request's UID label
//     (tenants cannot set it: admission refuses nodeLabels under
//     tgp.solanyn.com/) or its providerID names an instance proven as above.
//
// A forged status therefore hurts only the forger, and the forger's real
// machine is still found by its prefix and terminated.

// machinePrefix starts every machine name of a request's attempts.
func machinePrefix(uid types.UID) string {
	id := strings.ReplaceAll(string(uid), "-", "")
	if len(id) > 16 {
		id = id[:16]
	}
	return providers.MachineNamePrefix + id + "-"
}

// ownsMachineName reports whether name is one of the request's machine names.
func ownsMachineName(req *tgpv1.GPURequest, name string) bool {
	rest, ok := strings.CutPrefix(name, machinePrefix(req.UID))
	if !ok || rest == "" {
		return false
	}
	for _, r := range rest {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

// currentMachine is status.machineName when it is provably the request's.
func currentMachine(req *tgpv1.GPURequest) string {
	if ownsMachineName(req, req.Status.MachineName) {
		return req.Status.MachineName
	}
	return ""
}

// ownedInstances are the instances, in every provider's latest listing,
// named with the request's prefix and not yet terminated.
func (c *Controller) ownedInstances(req *tgpv1.GPURequest) []providers.Instance {
	var out []providers.Instance
	for _, in := range c.inventory.ForRequest(machinePrefix(req.UID)) {
		if in.State != providers.StateTerminated && ownsMachineName(req, in.Name) {
			out = append(out, in)
		}
	}
	return out
}

// ownsNode reports whether a Node provably belongs to the request.
func (c *Controller) ownsNode(req *tgpv1.GPURequest, n *corev1.Node) bool {
	if n == nil {
		return false
	}
	if uid := n.Labels[LabelRequestUID]; uid != "" {
		return uid == string(req.UID)
	}
	provider, id, ok := strings.Cut(n.Spec.ProviderID, "://")
	if !ok || id == "" {
		return false
	}
	in, found := c.inventory.ByID(provider, id)
	return found && ownsMachineName(req, in.Name)
}
