// Package v1 is the v1 version of the tgp.solanyn.com API: GPURequest, one
// object that asks the operator for a GPU machine joined to the cluster, and
// GPUBudget, the limits on what the GPURequests of a namespace may spend.
//
// +k8s:deepcopy-gen=package
// +groupName=tgp.solanyn.com
package v1
