package v1

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// GPURequest asks the operator for one GPU machine, launched on the cheapest
// matching offer across the supported GPU clouds and joined to the cluster as
// a labelled, tainted Node.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=gpur,categories=all
// +kubebuilder:printcolumn:name="GPU",type=string,JSONPath=`.spec.gpuType`
// +kubebuilder:printcolumn:name="COUNT",type=integer,JSONPath=`.spec.gpuCount`
// +kubebuilder:printcolumn:name="SPOT",type=boolean,JSONPath=`.status.spot`
// +kubebuilder:printcolumn:name="PROVIDER",type=string,JSONPath=`.status.provider`
// +kubebuilder:printcolumn:name="REGION",type=string,JSONPath=`.status.region`
// +kubebuilder:printcolumn:name="PRICE",type=number,JSONPath=`.status.hourlyPrice`
// +kubebuilder:printcolumn:name="PHASE",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="NODE",type=string,JSONPath=`.status.nodeName`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type GPURequest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the machine wanted.
	// +required
	Spec GPURequestSpec `json:"spec"`
	// status is what the operator found, launched and observed.
	// +optional
	Status GPURequestStatus `json:"status,omitempty"`
}

// RegionPolicy says how regionPreference is used.
// +kubebuilder:validation:Enum=Ordered;LowestPrice
type RegionPolicy string

const (
	// RegionPolicyOrdered: earlier regions win; later ones are failover.
	RegionPolicyOrdered RegionPolicy = "Ordered"
	// RegionPolicyLowestPrice: the cheapest offer across the listed regions
	// wins; list order breaks ties.
	RegionPolicyLowestPrice RegionPolicy = "LowestPrice"
)

// GPURequestSpec is the machine a user asks for.
//
// +kubebuilder:validation:XValidation:rule="!has(self.maxSpotPrice) || (has(self.spotInstance) && self.spotInstance)",message="maxSpotPrice requires spotInstance: true",fieldPath=".maxSpotPrice"
// +kubebuilder:validation:XValidation:rule="!has(self.maxSpotPrice) || !has(self.maxPrice) || self.maxSpotPrice <= self.maxPrice",message="maxSpotPrice must not be greater than maxPrice",fieldPath=".maxSpotPrice"
// +kubebuilder:validation:XValidation:rule="!(has(self.region) && has(self.regionPreference))",message="set at most one of region and regionPreference",fieldPath=".regionPreference"
// +kubebuilder:validation:XValidation:rule="(has(self.spotInstance) && self.spotInstance) == (has(oldSelf.spotInstance) && oldSelf.spotInstance)",message="spotInstance is immutable",fieldPath=".spotInstance"
// +kubebuilder:validation:XValidation:rule="has(self.regionPreference) == has(oldSelf.regionPreference) && (!has(self.regionPreference) || self.regionPreference == oldSelf.regionPreference)",message="regionPreference is immutable",fieldPath=".regionPreference"
// +kubebuilder:validation:XValidation:rule="has(self.region) == has(oldSelf.region) && (!has(self.region) || self.region == oldSelf.region)",message="region is immutable",fieldPath=".region"
// +kubebuilder:validation:XValidation:rule="has(self.provider) == has(oldSelf.provider) && (!has(self.provider) || self.provider == oldSelf.provider)",message="provider is immutable",fieldPath=".provider"
// +kubebuilder:validation:XValidation:rule="has(self.container) == has(oldSelf.container) && (!has(self.container) || self.container == oldSelf.container)",message="container is immutable",fieldPath=".container"
// +kubebuilder:validation:XValidation:rule="!has(self.container) || !has(self.idleTimeout)",message="idleTimeout needs a Node; a container request cannot set it",fieldPath=".idleTimeout"
// +kubebuilder:validation:XValidation:rule="!has(self.container) || (!has(self.bootstrap) && !has(self.nodeLabels) && !has(self.nodeTaints))",message="bootstrap, nodeLabels and nodeTaints need a Node; a container request cannot set them",fieldPath=".container"
type GPURequestSpec struct {
	// gpuType is the canonical GPU model (RTX4090, A100, A100-80GB, H100, ...); each provider adapter translates it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="gpuType is immutable"
	GPUType string `json:"gpuType"`

	// gpuCount is the exact number of GPUs on the one machine (1 to 16).
	// +optional
	// +default=1
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=16
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="gpuCount is immutable"
	GPUCount int32 `json:"gpuCount,omitempty"`

	// region is one canonical region or region prefix ("us-west" matches us-west-1 and us-west-2).
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9]+(-[a-z0-9]+)*$`
	Region string `json:"region,omitempty"`

	// regionPreference lists canonical regions or prefixes, most preferred first; entries must be unique.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]+(-[a-z0-9]+)*$`
	RegionPreference []string `json:"regionPreference,omitempty"`

	// regionPolicy is Ordered (earlier regions win, later ones are failover) or LowestPrice (cheapest across listed regions).
	// +optional
	// +kubebuilder:default=Ordered
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="regionPolicy is immutable"
	RegionPolicy RegionPolicy `json:"regionPolicy,omitempty"`

	// spotInstance prefers spot (interruptible) capacity; on-demand is then only the maxPrice-capped fallback.
	// +optional
	SpotInstance bool `json:"spotInstance,omitempty"`

	// maxSpotPrice caps a spot machine in USD per hour for the whole machine; needs spotInstance.
	// +optional
	// +kubebuilder:validation:ExclusiveMinimum=true
	// +kubebuilder:validation:Minimum=0
	MaxSpotPrice *float64 `json:"maxSpotPrice,omitempty"`

	// maxPrice caps an on-demand machine in USD per hour for the whole machine (the spot cap too when maxSpotPrice is unset).
	// +optional
	// +kubebuilder:validation:ExclusiveMinimum=true
	// +kubebuilder:validation:Minimum=0
	MaxPrice *float64 `json:"maxPrice,omitempty"`

	// provider pins the request to one provider: lambdalabs, runpod, paperspace or vastai.
	// +optional
	// +kubebuilder:validation:Enum=lambdalabs;runpod;paperspace;vastai
	Provider string `json:"provider,omitempty"`

	// maxLifetime terminates the machine this long after it was provisioned (for example "8h"); mutable.
	// +optional
	MaxLifetime *Duration `json:"maxLifetime,omitempty"`

	// idleTimeout terminates the machine after its Node has run no non-DaemonSet pod for this long; mutable.
	// +optional
	IdleTimeout *Duration `json:"idleTimeout,omitempty"`

	// bootstrap names the Secret key holding the user-data template (cloud-init or Talos config) that joins the machine to the cluster.
	// +optional
	Bootstrap *BootstrapSource `json:"bootstrap,omitempty"`

	// nodeLabels are added to the joined Node. Keys are qualified names (an
	// optional DNS subdomain prefix and "/", then a name of at most 63
	// characters); values are label values (at most 63 characters, may be
	// empty). Keys under kubernetes.io/, k8s.io/, tgp.solanyn.com/ and their
	// subdomains (node-role.kubernetes.io/, node-restriction.kubernetes.io/, ...)
	// are reserved: the kubelet may not set them, or the operator sets them itself.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	// +kubebuilder:validation:XValidation:rule="self.all(k, !format.qualifiedName().validate(k).hasValue())",message="keys must be qualified names (an optional DNS subdomain prefix and /, then at most 63 letters, digits, -, _ or ., beginning and ending with a letter or digit)"
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.matches('^([^/]*[.])?(kubernetes[.]io|k8s[.]io|tgp[.]solanyn[.]com)/'))",message="keys under kubernetes.io/, k8s.io/, tgp.solanyn.com/ and their subdomains are reserved"
	NodeLabels map[string]LabelValue `json:"nodeLabels,omitempty"`

	// nodeTaints are added to the joined Node; at most one taint per key and effect.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="self.all(t, self.exists_one(u, u.key == t.key && u.effect == t.effect))",message="taints must be unique by key and effect"
	NodeTaints []NodeTaint `json:"nodeTaints,omitempty"`

	// container asks for a container machine (RunPod pods, Vast.ai container
	// instances) running this image instead of a VM that joins as a Node. The
	// request is Ready when the provider reports the container running; its
	// address and ports are in status.ports. Immutable.
	// +optional
	Container *ContainerSpec `json:"container,omitempty"`
}

// ContainerSpec is the container a container machine runs.
type ContainerSpec struct {
	// image is the container image reference, such as runpod/pytorch:2.8.0-py3.11-cuda12.8.1-devel-ubuntu22.04.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^\s]+$`
	Image string `json:"image"`
	// args are passed to the image's entrypoint.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=1024
	Args []string `json:"args,omitempty"`
	// env sets environment variables in the container, each from a literal
	// value or from a key of a Secret in the request's namespace that carries
	// the label tgp.solanyn.com/bootstrap: "true".
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Env []ContainerEnvVar `json:"env,omitempty"`
	// ports the container exposes; status.ports shows where each is reachable.
	// +optional
	// +listType=map
	// +listMapKey=port
	// +kubebuilder:validation:MaxItems=16
	Ports []ContainerPort `json:"ports,omitempty"`
}

// ContainerEnvVar is one environment variable: exactly one of value and valueFrom.
// +kubebuilder:validation:XValidation:rule="has(self.value) != has(self.valueFrom)",message="set exactly one of value and valueFrom"
type ContainerEnvVar struct {
	// name is the variable's name: letters, digits and _, not starting with a digit.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[A-Za-z_][A-Za-z0-9_]*$`
	Name string `json:"name"`
	// value is the literal value.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Value *string `json:"value,omitempty"`
	// valueFrom takes the value from a key of an opted-in Secret.
	// +optional
	ValueFrom *SecretKeyRef `json:"valueFrom,omitempty"`
}

// SecretKeyRef names one key of a Secret in the request's namespace.
type SecretKeyRef struct {
	// secretName is the Secret; it must carry the label tgp.solanyn.com/bootstrap: "true".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
	// key is the Secret data key.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// ContainerPort is a port the container listens on.
type ContainerPort struct {
	// port is the container's port.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// protocol is http (served through the provider's HTTP proxy where it has one) or tcp (default).
	// +optional
	// +kubebuilder:default=tcp
	// +kubebuilder:validation:Enum=http;tcp
	Protocol string `json:"protocol,omitempty"`
}

// PortStatus says where a container port is reachable.
type PortStatus struct {
	// port is the container's port.
	Port int32 `json:"port"`
	// protocol is http or tcp.
	// +optional
	Protocol string `json:"protocol,omitempty"`
	// publicIP is the address the port is reachable at, when the provider reports one.
	// +optional
	PublicIP string `json:"publicIP,omitempty"`
	// publicPort is the port on publicIP, when the provider maps one.
	// +optional
	PublicPort int32 `json:"publicPort,omitempty"`
}

// LabelValue is declared as an alias of string, so map[string]LabelValue is
// map[string]string and Value LabelValue is a string to every caller: the
// declaration only carries the schema (controller-gen has no markers for a
// map's values, and the CEL cost estimator needs their maxLength).

// LabelValue is a Kubernetes label value: empty, or at most 63 letters,
// digits, '-', '_' or '.', beginning and ending with a letter or digit.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`
type LabelValue = string

// Duration is a positive Go duration string ("90m", "8h", "1h30m"; units
// ns, us, ms, s, m, h: no d or w). It is kept as the user wrote it, so a
// value that slipped past admission (stored before the rules existed, or
// written straight to etcd) never fails decoding and never stops an
// informer from listing the other objects; Parse reports it and the
// controller turns it into a condition on that one object.
//
// The pattern is time.ParseDuration's grammar without a minus sign; the rule
// then parses it (CEL's duration() is time.ParseDuration) and requires it to
// be positive, so admission and Parse agree.
// +kubebuilder:validation:MaxLength=64
// +kubebuilder:validation:Pattern=`^[+]?(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`
// +kubebuilder:validation:XValidation:rule="self.matches('^[+]?(([0-9]+([.][0-9]*)?|[.][0-9]+)(ns|us|µs|μs|ms|s|m|h))+$') && duration(self) > duration('0s')",message="must be a positive Go duration such as 90m or 36h (no d or w units)"
type Duration string

// Parse returns the duration, or an error when it is not a positive Go duration.
func (d Duration) Parse() (time.Duration, error) {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0, fmt.Errorf("%q is not a Go duration (use h, m, s: for example 36h, not 1d)", string(d))
	}
	if v <= 0 {
		return 0, fmt.Errorf("%q must be positive", string(d))
	}
	return v, nil
}

// NodeTaint is a taint put on the joined Node (the kubelet registers with it).
type NodeTaint struct {
	// key is the taint key, a qualified name (optional DNS prefix and "/", then up to 63 characters).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:XValidation:rule="!format.qualifiedName().validate(self).hasValue()",message="must be a qualified name (an optional DNS subdomain prefix and /, then at most 63 letters, digits, -, _ or ., beginning and ending with a letter or digit)"
	Key string `json:"key"`
	// value is the taint value, a valid label value (may be empty).
	// +optional
	Value LabelValue `json:"value,omitempty"`
	// effect is NoSchedule, PreferNoSchedule or NoExecute.
	// +required
	// +kubebuilder:validation:Enum=NoSchedule;PreferNoSchedule;NoExecute
	Effect corev1.TaintEffect `json:"effect"`
}

// BootstrapSource points at a user-data template in a Secret in the
// request's namespace. The template is Go text/template; it sees .NodeName,
// .RequestName, .RequestNamespace, .Labels, .Taints, .Provider and .Region.
type BootstrapSource struct {
	// secretName is the Secret in the GPURequest's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	SecretName string `json:"secretName"`
	// key is the Secret data key holding the template (default "userdata"):
	// cloud-init (or another user-data format, such as a Talos machine
	// config) for providers that take user data, or a script starting with
	// "#!", which cloud-init runs too.
	// +optional
	// +kubebuilder:default=userdata
	Key string `json:"key,omitempty"`
	// scriptKey optionally names a key holding a script ("#!" first line)
	// for providers that run only a startup script (Paperspace), when key
	// holds cloud-init. A provider with no template it can run gets no
	// launch: its offers lose with reason NoBootstrapForProvider.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ScriptKey string `json:"scriptKey,omitempty"`
	// valuesFrom names a Secret in the GPURequest's namespace, carrying the
	// label tgp.solanyn.com/bootstrap: "true", whose keys the template reads
	// as .Values.<key> (a Tailscale auth key, a k3s join token). Its values
	// reach only the rendered user data: they are never logged or put in an
	// Event, a condition or status. A key the template reads and the Secret
	// lacks is a BootstrapError.
	// +optional
	ValuesFrom *ValuesSource `json:"valuesFrom,omitempty"`
}

// ValuesSource names the Secret of a bootstrap template's .Values.
type ValuesSource struct {
	// secretName is the Secret in the GPURequest's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
}

// Phase is where a GPURequest is in its lifecycle.
// +kubebuilder:validation:Enum=Pending;Provisioning;Booting;Joining;Ready;Interrupted;Terminating;Terminated;Failed
type Phase string

const (
	PhasePending      Phase = "Pending"
	PhaseProvisioning Phase = "Provisioning"
	PhaseBooting      Phase = "Booting"
	PhaseJoining      Phase = "Joining"
	PhaseReady        Phase = "Ready"
	PhaseInterrupted  Phase = "Interrupted"
	PhaseTerminating  Phase = "Terminating"
	PhaseTerminated   Phase = "Terminated"
	PhaseFailed       Phase = "Failed"
)

// Finalizer keeps a GPURequest until its machine is terminated.
const Finalizer = "tgp.solanyn.com/instance"

// Condition types.
const (
	ConditionReady           = "Ready"
	ConditionLaunched        = "Launched"
	ConditionNodeJoined      = "NodeJoined"
	ConditionInterrupted     = "Interrupted"
	ConditionOffersAvailable = "OffersAvailable"
)

// GPURequestStatus is what the operator observed and did.
type GPURequestStatus struct {
	// phase is the lifecycle phase: Pending, Provisioning, Booting, Joining, Ready, Interrupted, Terminating, Terminated or Failed.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// provider is the provider of the current machine.
	// +optional
	Provider string `json:"provider,omitempty"`
	// region is the canonical region of the current machine.
	// +optional
	Region string `json:"region,omitempty"`
	// providerRegion is the provider's own name for that region or data center.
	// +optional
	ProviderRegion string `json:"providerRegion,omitempty"`
	// instanceType is the provider's instance type (or GPU type id) of the current machine.
	// +optional
	InstanceType string `json:"instanceType,omitempty"`
	// instanceID is the provider's id of the current machine.
	// +optional
	InstanceID string `json:"instanceID,omitempty"`
	// machineName is the name the current machine is launched under, written before the launch call.
	// +optional
	MachineName string `json:"machineName,omitempty"`
	// attempt counts machines launched for this request; it is part of machineName.
	// +optional
	Attempt int32 `json:"attempt,omitempty"`
	// spot is true when the current machine is spot (interruptible) capacity.
	// +optional
	Spot bool `json:"spot"`
	// hourlyPrice is the current machine's price in USD per hour for the whole machine.
	// +optional
	HourlyPrice *float64 `json:"hourlyPrice,omitempty"`
	// priceSource says where hourlyPrice came from: api or static (the operator's price table).
	// +optional
	PriceSource string `json:"priceSource,omitempty"`
	// nodeName is the Node the current machine joined as.
	// +optional
	NodeName string `json:"nodeName,omitempty"`
	// publicIP is the current machine's public address.
	// +optional
	PublicIP string `json:"publicIP,omitempty"`
	// ports are a container machine's exposed ports and where each is reachable.
	// +optional
	// +listType=atomic
	Ports []PortStatus `json:"ports,omitempty"`
	// launchedAt is when the launch of the current machine succeeded (or it was adopted).
	// +optional
	LaunchedAt *metav1.Time `json:"launchedAt,omitempty"`
	// provisionedAt is when the first machine for this request was launched; maxLifetime counts from here.
	// +optional
	ProvisionedAt *metav1.Time `json:"provisionedAt,omitempty"`
	// readyAt is when the current machine's Node became Ready with its labels and taints.
	// +optional
	ReadyAt *metav1.Time `json:"readyAt,omitempty"`
	// idleSince is when the Node last ran its last non-DaemonSet pod (unset while busy).
	// +optional
	IdleSince *metav1.Time `json:"idleSince,omitempty"`
	// terminationScheduledAt is when maxLifetime ends the machine.
	// +optional
	TerminationScheduledAt *metav1.Time `json:"terminationScheduledAt,omitempty"`
	// terminationStartedAt is when the operator began cordoning, draining and terminating the machine.
	// +optional
	TerminationStartedAt *metav1.Time `json:"terminationStartedAt,omitempty"`
	// terminationReason says why the machine is being or was terminated (MaxLifetime, IdleTimeout, Deleted, JoinTimeout).
	// +optional
	TerminationReason string `json:"terminationReason,omitempty"`
	// interruptions counts spot interruptions (preemptions, stops, vanished machines) recovered from.
	// +optional
	Interruptions int32 `json:"interruptions,omitempty"`
	// accumulatedCost is the USD spent on this request's machines so far (hourly price times running time).
	// +optional
	AccumulatedCost *float64 `json:"accumulatedCost,omitempty"`
	// costUpdatedAt is the moment accumulatedCost was last brought up to date.
	// +optional
	CostUpdatedAt *metav1.Time `json:"costUpdatedAt,omitempty"`
	// monthCost is the part of accumulatedCost accrued in the current
	// calendar month (UTC) as of costUpdatedAt: what GPUBudgets count as this
	// request's month-to-date spend. It starts again from zero in a new month.
	// +optional
	MonthCost *MonthCost `json:"monthCost,omitempty"`
	// selection is a short summary of the last offer selection: the chosen offer, offers considered and why others lost.
	// +optional
	Selection string `json:"selection,omitempty"`
	// message is a human-readable explanation of the current phase.
	// +optional
	Message string `json:"message,omitempty"`
	// observedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// conditions are Ready, Launched, NodeJoined, Interrupted and OffersAvailable.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// GPURequestList is a list of GPURequests.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type GPURequestList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the GPURequests.
	Items []GPURequest `json:"items"`
}
