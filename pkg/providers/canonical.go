package providers

// CanonicalGPUTypes are the GPU model names users write in spec.gpuType. Each
// adapter maps its native type ids onto these; a native type that maps to
// none is left out of the catalog.
var CanonicalGPUTypes = []string{
	"RTX3090", "RTX4090", "RTX5090", "A4000", "A5000", "A10", "A40", "A6000",
	"L4", "L40", "L40S", "A100", "A100-80GB", "H100", "H200", "GH200", "B200",
	"V100", "V100-32GB", "P4000",
}
