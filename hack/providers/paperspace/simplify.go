//go:build ignore

// simplify rewrites the Paperspace OpenAPI document before code generation:
// every anyOf whose members are all plain schemas of one primitive type (the
// spec's `region: anyOf[enum ny2, enum ca1, enum ams1, string]` and
// `diskSize: anyOf[enum 50, ..., number > 0]`) becomes that primitive type.
// oapi-codegen turns such unions into structs with an unexported field that a
// caller outside the generated package cannot set, which makes the region
// query parameter of machine-availability unusable. The simplified schema
// keeps the type and drops the enums and bounds, which the generated client
// never checks anyway. Output keys are sorted, so the result is
// deterministic.
//
// Usage: go run simplify.go <in.json> <out.json>
package main

import (
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: go run simplify.go <in.json> <out.json>")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := json.MarshalIndent(walk(doc), "", "  ")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Args[2], append(out, '\n'), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// walk simplifies v bottom-up.
func walk(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, c := range t {
			t[k] = walk(c)
		}
		if typ, ok := primitiveUnion(t["anyOf"]); ok {
			delete(t, "anyOf")
			t["type"] = typ
		}
		return t
	case []any:
		for i, c := range t {
			t[i] = walk(c)
		}
		return t
	default:
		return v
	}
}

// primitiveUnion reports the common type of an anyOf list whose members are
// all schemas of the same string or number type with no properties of their
// own beyond enum and numeric bounds.
func primitiveUnion(v any) (string, bool) {
	members, ok := v.([]any)
	if !ok || len(members) == 0 {
		return "", false
	}
	var typ string
	for _, m := range members {
		s, ok := m.(map[string]any)
		if !ok {
			return "", false
		}
		t, _ := s["type"].(string)
		if t != "string" && t != "number" || (typ != "" && t != typ) {
			return "", false
		}
		typ = t
		for k := range s {
			switch k {
			case "type", "enum", "minimum", "exclusiveMinimum":
			default:
				return "", false
			}
		}
	}
	return typ, true
}
