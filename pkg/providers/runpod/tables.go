package runpod

// GPUTypes maps RunPod GPU type ids (the gpuTypeIds enum of REST v1 and the
// ids of the v2 catalog) to canonical GPU models (providers.CanonicalGPUTypes).
// Types not listed (consumer cards the operator does not offer, AMD parts)
// are left out of the catalog.
var GPUTypes = map[string]string{
	"NVIDIA GeForce RTX 3090": "RTX3090",
	"NVIDIA GeForce RTX 4090": "RTX4090",
	"NVIDIA GeForce RTX 5090": "RTX5090",
	"NVIDIA RTX A4000":        "A4000",
	"NVIDIA RTX A5000":        "A5000",
	"NVIDIA RTX A6000":        "A6000",
	"NVIDIA A40":              "A40",
	"NVIDIA L4":               "L4",
	"NVIDIA L40":              "L40",
	"NVIDIA L40S":             "L40S",
	"NVIDIA A100-SXM4-40GB":   "A100",
	"NVIDIA A100 80GB PCIe":   "A100-80GB",
	"NVIDIA A100-SXM4-80GB":   "A100-80GB",
	"NVIDIA H100 80GB HBM3":   "H100",
	"NVIDIA H100 PCIe":        "H100",
	"NVIDIA H100 NVL":         "H100",
	"NVIDIA H200":             "H200",
	"NVIDIA H200 NVL":         "H200",
	"NVIDIA B200":             "B200",
	"Tesla V100-PCIE-16GB":    "V100",
	"Tesla V100-SXM2-16GB":    "V100",
	"Tesla V100-FHHL-16GB":    "V100",
	"Tesla V100-PCIE-32GB":    "V100-32GB",
	"Tesla V100-SXM2-32GB":    "V100-32GB",
}

// Regions maps RunPod data center ids (the dataCenterIds enum of REST v1) to
// canonical regions. Data centers not listed are left out of the catalog.
var Regions = map[string]string{
	"US-CA-2":  "us-west-1",
	"US-WA-1":  "us-west-2",
	"US-TX-1":  "us-south-1",
	"US-TX-3":  "us-south-1",
	"US-TX-4":  "us-south-1",
	"US-DE-1":  "us-east-1",
	"US-NC-1":  "us-east-1",
	"US-GA-1":  "us-east-2",
	"US-GA-2":  "us-east-2",
	"US-IL-1":  "us-midwest-1",
	"US-KS-2":  "us-midwest-2",
	"US-KS-3":  "us-midwest-2",
	"CA-MTL-1": "ca-east-1",
	"CA-MTL-2": "ca-east-1",
	"CA-MTL-3": "ca-east-1",
	"EU-NL-1":  "eu-west-1",
	"EU-FR-1":  "eu-west-3",
	"EU-CZ-1":  "eu-central-2",
	"EU-RO-1":  "eu-east-1",
	"EU-SE-1":  "eu-north-1",
	"EUR-IS-1": "eu-north-2",
	"EUR-IS-2": "eu-north-2",
	"EUR-IS-3": "eu-north-2",
	"EUR-NO-1": "eu-north-3",
	"OC-AU-1":  "ap-southeast-2",
	"AP-JP-1":  "ap-northeast-1",
}
