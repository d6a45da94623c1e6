package main

import (
	"testing"
	"time"
)

// operatorBin builds the operator once for all tests of the package.
func operatorBin(t *testing.T) string {
	t.Helper()
	bin, err := buildOperator()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// testLogf logs through t with a timestamp, for progress in -v runs.
func testLogf(t *testing.T) func(string, ...any) {
	return func(format string, args ...any) {
		t.Helper()
		t.Logf("%s "+format, append([]any{time.Now().Format("15:04:05.000")}, args...)...)
	}
}
