package version

import (
	"regexp"
	"strings"
	"testing"
)

func TestVersionIsASemverTag(t *testing.T) {
	// The version is an image tag and a release name: vMAJOR.MINOR.PATCH with
	// an optional pre-release.
	if !regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$`).MatchString(Version) {
		t.Errorf("Version %q is not a v-prefixed semantic version", Version)
	}
}

func TestStringNamesVersionAndRevision(t *testing.T) {
	old := Revision
	t.Cleanup(func() { Revision = old })
	Revision = "0123abcd"
	s := String()
	if f := strings.Fields(s); len(f) < 2 || f[0] != "gpu-operator" || f[1] != Version {
		t.Errorf("String() = %q, want it to start with %q", s, "gpu-operator "+Version)
	}
	if !strings.Contains(s, "(revision 0123abcd,") {
		t.Errorf("String() = %q, want the revision set at link time", s)
	}
}
