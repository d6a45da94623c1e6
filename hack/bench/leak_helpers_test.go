package main

import (
	"encoding/hex"
	"strings"
	"testing"
)

// TestUndumpHex checks that a value client-go's hex dump of a protobuf body
// splits across lines is found again, as the leak test relies on it.
func TestUndumpHex(t *testing.T) {
	body := []byte("\x00k8s\x00\x0a\x0cv1\x12\x06Secret" + strings.Repeat("\x01", 7) + "#cloud-config\n# " + bootstrapMarker + "\nhostname: x\n")
	dump := hex.Dump(body)
	if strings.Contains(dump, bootstrapMarker) {
		t.Fatalf("the marker is not split by the dump, so this test proves nothing:\n%s", dump)
	}
	// As klog prints a multi-line value, inside other log lines.
	var log strings.Builder
	log.WriteString("I1201 09:42:13.229638   29223 type.go:165] \"Response Body\" body=<\n")
	for _, l := range strings.SplitAfter(strings.TrimSuffix(dump, "\n"), "\n") {
		log.WriteString("\t" + l)
	}
	log.WriteString("\n >\nI1201 09:42:13.229854   29223 type.go:244] \"Request Body\" body=\"\"\n")
	got := undumpHex(log.String())
	if !strings.Contains(got, bootstrapMarker) {
		t.Errorf("undumpHex lost the marker: %q", got)
	}
	if got != string(body)+"\n" {
		t.Errorf("undumpHex = %q, want %q", got, string(body)+"\n")
	}
	// A dump truncated mid-line (client-go at -v=8 and -v=9) still decodes
	// up to the cut.
	kept := dump[:len(dump)/2]
	lines := strings.Split(kept, "\n")
	got = strings.TrimSuffix(undumpHex(strings.Join(lines, "\n\t")+" [truncated 42 chars]\n >\n"), "\n")
	if !strings.HasPrefix(string(body), got) || len(got) <= 16*(len(lines)-1) {
		t.Errorf("undumpHex of a dump truncated after %d whole lines = %q, want more of %q", len(lines)-1, got, body)
	}
}
