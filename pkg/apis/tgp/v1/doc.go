// Package v1 is the v1 version of the tgp.solanyn.com API: GPURequest, one
// object that asks the operator for a GPU machine joined to the cluster.
//
// +k8s:deepcopy-gen=package
// +groupName=tgp.solanyn.com
package v1
