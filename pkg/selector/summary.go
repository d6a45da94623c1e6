package selector

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// Summary is a one-line account of the selection for an Event, `kubectl
// describe` and a status message: the chosen offer (or that there is none),
// how many offers were considered and how many lost for each reason, most
// frequent first. When maxLen > 0 the summary is cut to at most maxLen bytes,
// dropping whole reasons from the end and marking the cut with "...".
func (r Result) Summary(maxLen int) string {
	var head string
	if best, ok := r.Best(); ok {
		head = fmt.Sprintf("chose %s/%s/%s %s at $%s/h; %d offers considered",
			best.Provider, best.InstanceType, best.ProviderRegion, best.Capacity,
			appendPrice(nil, best.HourlyPrice), r.Considered)
	} else {
		head = fmt.Sprintf("no eligible offer among %d for %s x%d", r.Considered, r.Request.GPUType, r.Request.GPUCount)
	}
	reasons := make([]Reason, 0, len(r.Counts))
	for _, reason := range reasonOrder {
		if r.Counts[reason] > 0 {
			reasons = append(reasons, reason)
		}
	}
	slices.SortStableFunc(reasons, func(a, b Reason) int { return cmp.Compare(r.Counts[b], r.Counts[a]) })
	items := make([]string, len(reasons))
	for i, reason := range reasons {
		items[i] = fmt.Sprintf("%d %s", r.Counts[reason], reason)
	}
	s := withItems(head, items, "")
	if maxLen <= 0 || len(s) <= maxLen {
		return s
	}
	for keep := len(items) - 1; keep >= 0; keep-- {
		if s := withItems(head, items[:keep], "..."); len(s) <= maxLen {
			return s
		}
	}
	return cut(head, maxLen)
}

// withItems joins head and items as "head: a, b", ending with more if set.
func withItems(head string, items []string, more string) string {
	if more != "" {
		items = append(items[:len(items):len(items)], more)
	}
	if len(items) == 0 {
		return head
	}
	return head + ": " + strings.Join(items, ", ")
}

// cut shortens s to at most maxLen bytes at a rune boundary, ending in "..."
// when there is room for it.
func cut(s string, maxLen int) string {
	const ellipsis = "..."
	if len(s) <= maxLen {
		return s
	}
	room := maxLen
	if maxLen > len(ellipsis) {
		room -= len(ellipsis)
	}
	for room > 0 && !utf8.RuneStart(s[room]) {
		room--
	}
	if maxLen > len(ellipsis) {
		return s[:room] + ellipsis
	}
	return s[:room]
}
