package main

import (
	"testing"
	"time"
)

// TestTemplateBombs is the template-bomb run at CI size: 10 bomb requests
// in one namespace (each variant of bombVariants twice: as cloud-init for
// a Lambda VM and as a bash script for a Paperspace VM) and 3 plain ones in
// another (an A6000 VM, an RTX 4090 container, an A4000 VM), created at
// once. Every bomb must be refused with
// Launched=False, reason BootstrapError, and launch no machine; every plain
// request must be Ready; no status or Event may quote a template; the
// operator must exit 0 after one SIGTERM. The times, RSS and CPU are
// logged, not asserted: they are figures (BENCHMARKS.md), not targets.
func TestTemplateBombs(t *testing.T) {
	bin := operatorBin(t)
	res := runBomb(t.Context(), bin, bombConfig{Bombs: 10, Normal: 3, NodeLabels: 20,
		Settle: 2 * time.Minute,
		// Liveness, not a speed target: the operator exits promptly after
		// one SIGTERM (this is generous for a loaded CI machine).
		StopTimeout: 20 * time.Second,
		Logf:        testLogf(t)})
	rep := bombReport{Attack: &res}
	t.Logf("\n%s", rep.table())
	for _, p := range res.problems() {
		t.Error(p)
	}
	// A very generous memory ceiling, far above what the run needs
	// (BENCHMARKS.md has the measured figure), under the Deployment's
	// 512Mi limit: it fails only if a template gets to allocate on the
	// scale of the old 4.8 GB.
	const ceiling = 400 << 20
	if res.PeakRSS == 0 {
		t.Error("the operator's VmHWM was not read")
	} else if res.PeakRSS >= ceiling {
		t.Errorf("operator VmHWM %s, want under %s", mib(res.PeakRSS), mib(ceiling))
	}
}

// TestReplaceSection checks that -write-bomb replaces only its own
// section of BENCHMARKS.md, or appends it.
func TestReplaceSection(t *testing.T) {
	const old = "# Benchmarks\n\n## Scale\n\nscale\n\n" + bombSection + "\n\nold figures\n\n## Later\n\nlater\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"replaced", old, "# Benchmarks\n\n## Scale\n\nscale\n\n" + bombSection + "\n\nnew\n\n## Later\n\nlater\n"},
		{"last section", "# B\n\n" + bombSection + "\n\nold\n", "# B\n\n" + bombSection + "\n\nnew\n"},
		{"appended", "# B\n\n## Scale\n\nscale\n", "# B\n\n## Scale\n\nscale\n\n" + bombSection + "\n\nnew\n"},
	} {
		if got := replaceSection(tc.doc, bombSection, bombSection+"\n\nnew\n"); got != tc.want {
			t.Errorf("%s: got\n%q\nwant\n%q", tc.name, got, tc.want)
		}
	}
}
