package providers

// MachineKind is what an offer's machine is.
type MachineKind string

const (
	// VM is a virtual (or bare-metal) machine that boots user data and can
	// run a kubelet: it joins the cluster as a Node.
	VM MachineKind = "vm"
	// Container is a container on a provider's host (a RunPod pod, a
	// Vast.ai container instance): it runs an image and cannot join as a
	// Node.
	Container MachineKind = "container"
)

// KindOf is an offer's machine kind, VM when unset.
func KindOf(o Offer) MachineKind {
	if o.Kind == "" {
		return VM
	}
	return o.Kind
}

// ContainerSpec is what a container machine runs, with every value resolved
// (Secret references already read).
type ContainerSpec struct {
	Image string
	Args  []string
	Env   map[string]string
	Ports []Port
}

// Port is a port a container exposes.
type Port struct {
	Port     int
	Protocol string // "http" or "tcp"
}

// PortMapping says where a container port is reachable.
type PortMapping struct {
	Port       int    `json:"port"`
	Protocol   string `json:"protocol,omitempty"`
	PublicIP   string `json:"publicIP,omitempty"`
	PublicPort int    `json:"publicPort,omitempty"`
}

// BootstrapFormat is a kind of user data a VM provider runs at first boot.
type BootstrapFormat string

const (
	// FormatCloudInit is cloud-init user data (#cloud-config, or any other
	// format cloud-init understands, such as a Talos machine config for an
	// image that reads it).
	FormatCloudInit BootstrapFormat = "cloud-init"
	// FormatScript is a script with a "#!" first line. cloud-init runs one
	// too, so it suits every VM provider.
	FormatScript BootstrapFormat = "script"
)

// BootstrapFormatter is implemented by an adapter whose VMs run only some
// user-data formats, or none (a provider whose machines are all
// containers). Sources for each adapter's answer: ../shared/DESIGN.md "The
// providers as they really are" (Lambda: cloud-init user_data; Paperspace: a
// bash startup script; RunPod: containers only).
type BootstrapFormatter interface {
	// BootstrapFormats are the formats the provider's VMs run at first
	// boot, in order of preference.
	BootstrapFormats() []BootstrapFormat
}

// BootstrapFormats are the user-data formats p's VMs run: its own answer,
// or cloud-init then script for an adapter that does not say.
func BootstrapFormats(p Provider) []BootstrapFormat {
	if f, ok := p.(BootstrapFormatter); ok {
		return f.BootstrapFormats()
	}
	return []BootstrapFormat{FormatCloudInit, FormatScript}
}

// FormatOf says which format a user-data template is in from its first
// line: "#!" is a script, anything else is given to cloud-init.
func FormatOf(template string) BootstrapFormat {
	if len(template) >= 2 && template[:2] == "#!" {
		return FormatScript
	}
	return FormatCloudInit
}

// BootstrapDelivery is how a VM's rendered bootstrap reaches it.
type BootstrapDelivery string

const (
	// DeliverAtCreate: the bootstrap is LaunchRequest.UserData, sent in the
	// create call and run at first boot (Lambda's cloud-init user_data,
	// Paperspace's startup script).
	DeliverAtCreate BootstrapDelivery = "create"
	// DeliverOverSSH: the create call cannot carry it (Vast.ai's VMs support
	// only the SSH launch mode, and its onstart field is documented for
	// containers only). The operator runs it itself, as a script over SSH
	// (pkg/providers/vastai/sshboot), once Instances reports the instance
	// running with an Instance.SSH endpoint, authenticating with its own key
	// pair, which the adapter registers with the account before it creates a
	// VM. LaunchRequest.UserData is not sent.
	DeliverOverSSH BootstrapDelivery = "ssh"
)

// BootstrapDeliverer is implemented by an adapter whose VMs do not take
// their bootstrap in the create call.
type BootstrapDeliverer interface {
	// BootstrapDelivery says how the provider's VMs get their bootstrap.
	BootstrapDelivery() BootstrapDelivery
}

// DeliveryOf is how p's VMs get their bootstrap: its own answer, or
// DeliverAtCreate for an adapter that does not say.
func DeliveryOf(p Provider) BootstrapDelivery {
	if d, ok := p.(BootstrapDeliverer); ok {
		return d.BootstrapDelivery()
	}
	return DeliverAtCreate
}

// SSHEndpoint is where an instance's SSH server listens.
type SSHEndpoint struct {
	Host string `json:"host"`
	Port int    `json:"port"`
	// User is the login user (Vast.ai: root).
	User string `json:"user"`
}
