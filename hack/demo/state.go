package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"time"
)

// stateFile is the name of the state file in the demo's directory.
const stateFile = "state.json"

// Phases of a demo, as recorded in its state file.
const (
	PhaseStarting  = "Starting"  // bringing up the control plane, simulators and operator
	PhaseRunning   = "Running"   // operator ready, examples being applied
	PhaseReady     = "Ready"     // every example settled: Ready, or Pending with no eligible offer
	PhaseRecovered = "Recovered" // the interrupted request is Ready again
	PhaseStopped   = "Stopped"
)

// State is what a demo records in <dir>/state.json: enough for `down` to
// stop a background demo and for tests to check on a running one.
type State struct {
	// PID is the demo process (the background supervisor for `up`).
	PID   int    `json:"pid"`
	Dir   string `json:"dir"`
	Phase string `json:"phase"`
	// Kubeconfig reaches the demo's API server (APIServer) as admin.
	Kubeconfig string `json:"kubeconfig,omitempty"`
	APIServer  string `json:"apiServer,omitempty"`
	MetricsURL string `json:"metricsURL,omitempty"`
	AdminURL   string `json:"adminURL,omitempty"`
	// Simulators are the simulators' base URLs by provider.
	Simulators map[string]string `json:"simulators,omitempty"`
	// Children are the pids of the processes the demo started, by name.
	Children map[string]int `json:"children,omitempty"`
	// SoldOut names the request whose first choice the demo sold out after
	// the operator read the catalog (the failover).
	SoldOut string `json:"soldOut,omitempty"`
	// Interrupted names the request whose machine the provider took back.
	Interrupted string    `json:"interrupted,omitempty"`
	StartedAt   time.Time `json:"startedAt"`
	// SetupSeconds: start to operator ready. AllReadySeconds: examples
	// applied to all settled. RecoverySeconds: interruption to Ready again.
	SetupSeconds    float64 `json:"setupSeconds,omitempty"`
	AllReadySeconds float64 `json:"allReadySeconds,omitempty"`
	RecoverySeconds float64 `json:"recoverySeconds,omitempty"`
	// BudgetHeld is the message of the request the GPUBudget held;
	// BudgetReleaseSeconds is raising the budget to that request Ready.
	BudgetHeld           string  `json:"budgetHeld,omitempty"`
	BudgetReleaseSeconds float64 `json:"budgetReleaseSeconds,omitempty"`
	Error                string  `json:"error,omitempty"`
}

// writeState writes the state file atomically.
func writeState(dir string, s *State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".state-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, stateFile))
}

// readState reads a demo's state file.
func readState(dir string) (*State, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
