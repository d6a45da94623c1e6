// Package bootstrap renders the user-data template of a GPURequest (Go
// text/template, from a tenant's Secret) within bounds of time, CPU,
// memory and output, with errors that never quote the template.
//
// A tenant controls the template, so Render assumes it is hostile. It
// refuses or stops a template at the first bound it meets, most of them
// before anything runs:
//
//   - Size: text over MaxTemplateBytes (1 MiB) is refused
//     (TemplateTooLarge). A scan before the parser refuses more than
//     32 KiB of code inside actions (the parser allocates about 110 bytes
//     and 0.6 µs per byte of it) and control structures or parentheses
//     nested over 100 deep (the parser recurses per level with no limit
//     of its own: 1 MiB of "if" actions took 256 MB of stack)
//     (TooComplex).
//   - Shape: define, block and template are refused, so nothing recurses;
//     so are call, declaring or assigning $ (which would let $.Labels be
//     anything), and range over anything but .Labels, .Taints, $.Labels,
//     $.Taints (or . inside a with of one of them): text/template would
//     range over an integer as large as the tenant writes (Forbidden).
//     More than 64 variable declarations are refused (TooComplex): the
//     executor finds a variable by walking back through those in scope.
//   - Steps: before it runs, the parsed tree's worst-case number of node
//     evaluations is computed with the real lengths of data.Labels and
//     data.Taints (a range multiplies its body by the length of what it
//     ranges over; if and with count their costlier branch). Over
//     Limits.MaxSteps (default 100,000; about 30 ms of rendering) the
//     template is refused (TooComplex): eight nested ranges over 20
//     labels are refused in tens of microseconds instead of running 20^8
//     times.
//   - Output: the template writes to a writer that fails once the output
//     would pass Limits.MaxBytes (the provider's user-data limit, default
//     1 MiB), which stops text/template (OutputTooLarge).
//   - Values: print, printf, println, html, js, urlquery, yaml and shell
//     may build 2 × Limits.MaxBytes in all, every result counted, also
//     those kept in variables or passed on; each call's result is bounded
//     before it is built (TooComplex). printf refuses widths, precisions
//     and argument indexes over MaxFormatWidth (4096) and "*"
//     (Forbidden): fmt alone allows a million per verb.
//   - Time: Limits.Timeout (default 1 s) is a backstop, checked by the
//     writer and by every function, the comparisons and index too, which
//     cost the length of the strings they compare or hash (Timeout).
//
// A caller's Limits are capped at MaxMaxBytes (64 MiB), MaxMaxSteps
// (10,000,000) and MaxTimeout (1 minute), so no value turns a bound off.
//
// With these, one render allocates at most about 120 bytes per byte of
// action code (under 4 MiB), a copy of the text, and 6 × MaxBytes (values
// built in fmt's growing buffers and copied, and the output);
// TestMemoryBounded measures the worst templates found.
//
// Errors are *Error: a line number, a class and a sentence of this
// package. text/template's own errors quote the template's tokens (a
// field, a function name, a string); Render reads only their line and
// their kind, so its errors may go to status, Events and logs.
//
// The template sees Data. Besides text/template's builtins it has yaml
// (a double-quoted scalar, also a JSON string) and shell (a single-quoted
// shell word) to write values safely; DefaultTemplate, a bash script, uses
// shell.
package bootstrap
