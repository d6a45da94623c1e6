// Package version is the one place the operator's release version is
// written. `gpu-operator version` prints it, `make image` tags the image
// with it (hack/image), and manifests/30-deployment.yaml references that
// tag; a test in hack/image fails when the manifests say anything else.
//
// A release changes Version here and the image tag in the manifests, in
// the same commit.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the operator's release version, and the tag of its image.
const Version = "v0.1.0"

// Revision is the source revision the binary was built from. `make image`
// sets it at link time (-X github.com/solanyn/gpu-operator/pkg/version.Revision=...);
// other builds fall back to the VCS stamp Go records, if any.
var Revision = ""

// String is what `gpu-operator version` prints:
//
//	gpu-operator v0.1.0 (revision 9462796b2c2b, go1.26.8, linux/amd64)
func String() string {
	return fmt.Sprintf("gpu-operator %s (revision %s, %s, %s/%s)",
		Version, revision(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func revision() string {
	if Revision != "" {
		return Revision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		rev, modified := "", false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if rev != "" {
			if modified {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}
